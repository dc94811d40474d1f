"""The kubeflow stack compiles ``train_binaryfacenet`` to a KFP spec with no cluster (`make
infra-check`): a real ZenML server (its own venv, built when missing), a local S3 behind the
stack's artifact store, ZenML's Kubeflow orchestrator (``vlrface_kubeflow``) writing the spec;
every step a task with its image, resources, placement, environment and Secret references, and
no secret value in the spec. ``apply_to_task`` is also checked on a one-task KFP pipeline."""

import pytest
import yaml

from tests.conftest import ROOT
from vlrface.errors import ConfigError
from vlrface.infra import INFRA, run_config, secret_env

GPU_STEPS = {"pretrain_model", "finetune_model"}
CPU_STEPS = {
    "load_data",
    "align_data",
    "validate_data",
    "register_pretrained",
    "register_finetuned",
    "evaluate_model",
    "export_lce",
    "register_model",
}
SECRET_KEYS = yaml.safe_load((INFRA / "settings" / "kubeflow.yaml").read_text())["secret_env"]
# values planted in the ZenML secrets the stack references: none may reach the spec
PLANTED = {
    "vlrface_s3": {
        "aws_access_key_id": "AKIAPLANTED0KFP0CHECK",
        "aws_secret_access_key": "planted-s3-secret-3f9c1e77",
    },
    "vlrface_mlflow": {"username": "planted-user-51d2", "password": "planted-pass-a80e46"},
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    from vlrface.kfp_compile import compile_spec, ensure_server_venv

    venv = ensure_server_venv()  # .infra/zenml-server: about a minute when it is missing
    repo_config = ROOT / ".zen" / "config.yaml"  # the checkout's active stack: not the compile's
    before = repo_config.read_bytes() if repo_config.is_file() else None
    path = compile_spec(tmp_path_factory.mktemp("kfp"), venv=venv, secrets=PLANTED)
    after = repo_config.read_bytes() if repo_config.is_file() else None
    assert after == before, f"{repo_config}: the compile changed the checkout's active stack"
    return path


@pytest.mark.kubeflow
def test_every_step_is_a_task_with_image_resources_and_placement(spec):
    from vlrface.kfp_compile import IMAGE, summary

    tasks = summary(spec)
    assert set(tasks) == GPU_STEPS | CPU_STEPS | {"latency_gate"}
    assert "pretrain-model" in tasks["finetune_model"]["after"]
    assert "latency-gate" in tasks["register_model"]["after"]
    refs = {k: f"{SECRET_KEYS['secret']}/{k}" for k in SECRET_KEYS["keys"]}
    for step, task in tasks.items():
        assert task["image"] == IMAGE, step
        assert task["command"] == ["python", "-m", "zenml.entrypoints.entrypoint"]
        assert task["args"][task["args"].index("--step_name") + 1] == step
        assert task["env"]["TF_USE_LEGACY_KERAS"] == "1", step
        assert task["secret_env"] == refs, step
        assert not set(refs) & set(task["env"]), step  # by reference only
    for step in GPU_STEPS:
        res = tasks[step]["resources"]
        assert (res["accelerator"], res["accelerator_count"]) == ("nvidia.com/gpu", "1"), step
        assert (res["cpu"], res["memory"], res["memory_request"]) == ("8", "60G", "60G"), step
        assert tasks[step]["node_selector"] == {"vlrface.io/pool": "gpu"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tasks[
            step
        ]["tolerations"]
    for step in CPU_STEPS:
        res = tasks[step]["resources"]
        assert res["accelerator"] is None, step
        assert (res["cpu"], res["memory"]) == ("4", "16G"), step
        assert tasks[step]["node_selector"] == {"vlrface.io/pool": "cpu"}, step
    gate = tasks["latency_gate"]
    assert gate["node_selector"] == {"kubernetes.io/arch": "arm64"}
    assert gate["resources"]["accelerator"] is None and gate["resources"]["memory"] == "4G"
    assert gate["tolerations"][0]["value"] == "arm64"


@pytest.mark.kubeflow
def test_no_secret_value_is_in_the_spec(spec):
    text = spec.read_text()
    for values in PLANTED.values():
        for value in values.values():
            assert value not in text
    assert "secretAsEnv" in text


def _one_task_spec(tmp_path, settings: dict, resources: dict):
    """A one-task KFP pipeline with ``apply_to_task`` applied, compiled by KFP."""
    from kfp import compiler, dsl
    from zenml.config.resource_settings import ResourceSettings

    from vlrface.kfp_compile import summary
    from vlrface.kubeflow import VlrfaceKubeflowSettings, apply_to_task

    pod = VlrfaceKubeflowSettings.model_validate(settings).pod_settings

    @dsl.container_component
    def train_step():
        return dsl.ContainerSpec(image="example.org/img:1", command=["true"])

    @dsl.pipeline(name="one")
    def one():
        apply_to_task(
            train_step().set_display_name("train_step"), ResourceSettings(**resources), pod
        )

    path = tmp_path / "one.yaml"
    compiler.Compiler().compile(one, str(path))
    return summary(path)["train_step"], path.read_text()


def test_apply_to_task_writes_resources_placement_and_secret_refs(tmp_path):
    env = secret_env({"secret": "s", "keys": ["VLRFACE_REGISTRY_LOCK_URI"]})
    settings = {
        "node_selectors": {"legacy": "x"},  # ZenML's legacy key, kept alongside pod_settings
        "pod_settings": {
            "node_selectors": {"kubernetes.io/arch": "arm64"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            "env": [*env, {"name": "PLAIN", "value": "1"}],
        },
    }
    task, _ = _one_task_spec(tmp_path, settings, {"cpu_count": 2, "gpu_count": 1, "memory": "4GiB"})
    assert task["resources"]["memory"] == "4Gi" and task["resources"]["cpu"] == "2"
    assert task["resources"]["accelerator"] == "nvidia.com/gpu"
    assert task["node_selector"] == {"legacy": "x", "kubernetes.io/arch": "arm64"}
    assert task["tolerations"] == [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]
    assert task["secret_env"] == {"VLRFACE_REGISTRY_LOCK_URI": "s/VLRFACE_REGISTRY_LOCK_URI"}
    assert task["env"]["PLAIN"] == "1"


def test_bad_kubeflow_settings_are_named():
    from vlrface.kubeflow import VlrfaceKubeflowSettings

    with pytest.raises(
        ValueError, match=r"vlrface_kubeflow orchestrator: pod_settings field\(s\) \['volumes'\]"
    ):
        VlrfaceKubeflowSettings.model_validate({"pod_settings": {"volumes": [{"name": "v"}]}})
    with pytest.raises(ConfigError, match="secret_env: expected"):
        secret_env({"secret": "s", "keys": "AWS_ACCESS_KEY_ID"})
    with pytest.raises(ConfigError, match="image ' ': not an image reference"):
        run_config(INFRA.parent / "configs" / "demo.yaml", "kubeflow", image=" ")
