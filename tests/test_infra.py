"""infra/: manifests pass kubernetes-validate --strict, the stacks import into a real ZenML
store, and the run settings give each step its resources (`make infra-check`)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vlrface.errors import ConfigError
from vlrface.infra import INFRA, STACKS, run_config, stack_definition

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MANIFESTS = sorted((INFRA / "k8s").rglob("*.yaml"))


def _validate(*paths):
    return subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", *map(str, paths)],
        capture_output=True,
        text=True,
    )


def test_every_manifest_passes_strict_validation():
    assert len(MANIFESTS) >= 4
    done = _validate(*MANIFESTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_strict_validation_rejects_an_unknown_field(tmp_path):
    doc = yaml.safe_load((INFRA / "k8s" / "mlflow" / "namespace.yaml").read_text())
    doc["spec"] = {"finalizers": ["kubernetes"], "replicas": 2}  # no `replicas` in a Namespace
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert _validate(bad).returncode != 0


def test_manifests_hold_secrets_by_reference_only():
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] != "Secret", f"{path}: a Secret object (create it out of band)"
    text = "".join(p.read_text() for p in MANIFESTS)
    assert "secretKeyRef" in text and "secretRef" in text
    assert not re.search(r"(?i)(password|secret_access_key)\s*[:=]\s*[\"']?\w{6,}", text)


@pytest.mark.parametrize("stack", STACKS)
def test_stack_imports_into_zenml(stack, tmp_path):
    doc = stack_definition(stack)
    confs = {k: c["configuration"] for k, c in doc["components"].items()}
    # credentials only as {{secret.key}} references
    for key in ("key", "secret"):
        assert re.fullmatch(r"\{\{vlrface_s3\.\w+\}\}", confs["artifact_store"][key])
    assert confs["artifact_store"]["path"].startswith("s3://")
    assert confs["experiment_tracker"]["tracking_uri"].startswith("http")
    if stack != "local":
        assert {"container_registry", "image_builder", "step_operator"} <= set(confs)
    # a ZenML store and repository of the test's own: the flavor is registered from the
    # project's root (its source), and nothing is written into the checkout's .zen/
    (tmp_path / "repo" / ".zen").mkdir(parents=True)
    env = {
        **os.environ,
        "ZENML_CONFIG_PATH": str(tmp_path / "zen"),
        "ZENML_REPOSITORY_PATH": str(tmp_path / "repo"),
        "ZENML_CUSTOM_SOURCE_ROOT": str(ROOT),
    }
    repo_config = ROOT / ".zen" / "config.yaml"
    before = repo_config.read_bytes() if repo_config.is_file() else None
    zenml = [str(BIN / "zenml")]
    for secret, values in {
        "vlrface_s3": ["--aws_access_key_id=test", "--aws_secret_access_key=test"],
        "vlrface_mlflow": ["--username=u", "--password=p"],
    }.items():
        subprocess.run([*zenml, "secret", "create", secret, *values], env=env, check=True,
                       capture_output=True, cwd=tmp_path)  # fmt: skip
    if doc["components"]["orchestrator"]["flavor"] == "vlrface_kubeflow":  # ours: register it
        flavor = "vlrface.kubeflow.VlrfaceKubeflowOrchestratorFlavor"
        subprocess.run([*zenml, "orchestrator", "flavor", "register", flavor], env=env,
                       check=True, capture_output=True, cwd=ROOT)  # fmt: skip
    done = subprocess.run(
        [*zenml, "stack", "import", str(INFRA / "stacks" / f"{stack}.yaml")],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    after = repo_config.read_bytes() if repo_config.is_file() else None
    assert after == before, f"{repo_config}: the test changed the checkout's active stack"
    out = tmp_path / "exported.yaml"
    exported = subprocess.run(
        [*zenml, "stack", "export", doc["stack_name"], str(out)],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-2000:]
    back = yaml.safe_load(out.read_text())["components"]
    for key, comp in doc["components"].items():
        got = back[key][0] if isinstance(back[key], list) else back[key]
        assert got["name"] == comp["name"] and got["flavor"] == comp["flavor"]
        for field, value in comp["configuration"].items():
            assert got["configuration"][field] == value, (key, field)


def _step_ids() -> set[str]:
    pipelines = "".join(p.read_text() for p in (ROOT / "pipelines").glob("*.py"))
    ids = set(re.findall(r'id="(\w+)"', pipelines))
    for path in (ROOT / "steps").glob("*.py"):
        ids |= set(re.findall(r"@step\(.*?\)\ndef (\w+)", path.read_text(), re.S))
    return ids


ORCH = {"kubernetes": "orchestrator.kubernetes", "kubeflow": "orchestrator.vlrface_kubeflow"}


def _pod(stack: str, settings: dict):
    """The pod settings the stack's orchestrator settings class makes of ``settings``."""
    if stack == "kubeflow":  # ZenML's Kubeflow settings, with the pod settings kept
        from vlrface.kubeflow import VlrfaceKubeflowSettings as Settings
    else:
        from zenml.integrations.kubernetes.flavors.kubernetes_orchestrator_flavor import (
            KubernetesOrchestratorSettings as Settings,
        )
    return Settings.model_validate(settings).pod_settings


@pytest.mark.parametrize("stack", ["kubernetes", "kubeflow"])
def test_run_config_sets_image_and_per_step_resources(stack):
    cfg = run_config(ROOT / "configs" / "ms1m_pretrain.yaml", stack)
    docker = cfg["settings"]["docker"]
    assert docker["environment"]["TF_USE_LEGACY_KERAS"] == "1"
    assert docker["install_stack_requirements"] is False
    assert docker["disable_automatic_requirements_detection"] is True
    assert (ROOT / docker["dockerfile"]).is_file()
    assert "-c constraints.txt" in (ROOT / docker["dockerfile"]).read_text()
    steps = cfg["steps"]
    assert set(steps) <= _step_ids(), set(steps) - _step_ids()
    orch = ORCH[stack]
    for name in ("pretrain_model", "finetune_model", "pretrain_torch", "finetune_torch"):
        assert steps[name]["settings"]["resources"]["gpu_count"] == 1
        if stack == "kubernetes":  # a GPU pod through the step operator
            assert steps[name]["step_operator"] == "vlrface_gpu"
            pod = steps[name]["settings"]["step_operator.kubernetes"]["pod_settings"]
            assert pod["resources"]["limits"]["nvidia.com/gpu"] == "1"
        else:  # the KFP task itself is the GPU pod (vlrface.kubeflow)
            assert "step_operator" not in steps[name]
            pod = _pod(stack, steps[name]["settings"][orch])
            assert pod.node_selectors == {"vlrface.io/pool": "gpu"} and pod.tolerations
    for name in ("load_data", "evaluate_model", "export_lce", "register_model"):
        assert "step_operator" not in steps[name]
        assert steps[name]["settings"]["resources"].get("gpu_count", 0) == 0
        assert _pod(stack, steps[name]["settings"][orch]).node_selectors
    for name in ("latency_gate", "onnx_latency_gate"):
        pod = _pod(stack, steps[name]["settings"][orch])
        assert pod.node_selectors == {"kubernetes.io/arch": "arm64"}
    assert cfg["environment"]["TF_USE_LEGACY_KERAS"] == "1"
    # the profile's parameters pass through untouched
    profile = yaml.safe_load((ROOT / "configs" / "ms1m_pretrain.yaml").read_text())
    assert cfg["parameters"] == profile["parameters"]


def test_run_config_names_the_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="unknown stack 'nomad'"):
        run_config(ROOT / "configs" / "demo.yaml", "nomad")
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: {seed: 0}\nenable_cache: maybe\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        run_config(bad, "kubernetes")


SECRET_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_USERNAME",
               "MLFLOW_TRACKING_PASSWORD", "VLRFACE_REGISTRY_LOCK_URI"}  # fmt: skip


def _pod_blocks(cfg: dict):
    for name, step in cfg["steps"].items():
        for key, block in step["settings"].items():
            if isinstance(block, dict) and "pod_settings" in block:
                yield name, key, block["pod_settings"]


@pytest.mark.parametrize("stack", ["kubernetes", "kubeflow"])
def test_pods_read_credentials_from_a_secret_by_reference(stack, tmp_path):
    """Every pod of every step gets the S3 keys, the MLflow login and the registry lock URI
    from the Kubernetes Secret `vlrface-pipelines` by reference; the pods ZenML's Kubernetes
    orchestrator builds of these settings pass kubernetes-validate --strict."""
    from kubernetes.client import ApiClient
    from zenml.integrations.kubernetes.manifest_utils import build_pod_manifest

    cfg = run_config(ROOT / "configs" / "ms1m_pretrain.yaml", stack)
    blocks = list(_pod_blocks(cfg))
    assert {name for name, _, _ in blocks} == set(cfg["steps"])  # no step without its pod
    for name, key, pod in blocks:
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["env"] if "valueFrom" in e}
        assert set(refs) == SECRET_KEYS, (name, key)
        assert all(r["name"] == "vlrface-pipelines" and r["key"] == k for k, r in refs.items())
        assert not any("value" in e for e in pod["env"] if e["name"] in SECRET_KEYS)
    # the rendered pods, one per distinct pod settings block, as ZenML builds them
    paths = []
    seen = set()
    for name, _key, pod in blocks:
        ident = yaml.safe_dump(pod, sort_keys=True)
        if ident in seen:
            continue
        seen.add(ident)
        settings = _pod(stack, {"pod_settings": pod}) if stack == "kubeflow" else None
        if settings is None:
            from zenml.integrations.kubernetes.pod_settings import KubernetesPodSettings

            settings = KubernetesPodSettings.model_validate(pod)
        manifest = build_pod_manifest(
            pod_name=name.replace("_", "-"),
            image_name="registry.example.org/vlrface/vlrface:0.1.0",
            command=["python", "-m", "zenml.entrypoints.entrypoint"],
            args=[],
            privileged=False,
            pod_settings=settings,
            service_account_name="vlrface-pipelines",
            env={"TF_USE_LEGACY_KERAS": "1"},
        )
        doc = ApiClient().sanitize_for_serialization(manifest)
        doc.update(apiVersion="v1", kind="Pod")
        doc["metadata"]["namespace"] = "vlrface"
        path = tmp_path / f"{stack}-{len(paths)}.yaml"
        path.write_text(yaml.safe_dump(doc))
        paths.append(path)
    done = _validate(*paths)
    assert done.returncode == 0, done.stdout + done.stderr
