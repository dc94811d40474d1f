"""``infra/``: the ZenML stacks to import and the run settings that go with each.

``infra/stacks/<stack>.yaml`` are ``zenml stack import`` files; ``infra/settings/<stack>.yaml``
hold the Docker settings and per-role step settings (``roles: {name: {steps, step_operator,
settings}}``). ``run_config`` merges a profile (``configs/*.yaml``) with a stack's settings into
one ``zenml pipeline run -c`` file, validated by ZenML's own run-configuration model.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from vlrface.errors import ConfigError

INFRA = Path(__file__).resolve().parents[1] / "infra"
STACKS = ("local", "kubernetes", "kubeflow")


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def stack_file(stack: str, infra: Path = INFRA) -> Path:
    if stack not in STACKS:
        raise ConfigError(f"unknown stack {stack!r}; choose one of {', '.join(STACKS)}")
    return infra / "stacks" / f"{stack}.yaml"


def stack_definition(stack: str, infra: Path = INFRA) -> dict:
    """The ``zenml stack import`` document of ``stack``."""
    return _read(stack_file(stack, infra))


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def secret_env(spec: dict | None, where: str = "secret_env") -> list[dict]:
    """Pod ``env`` entries that read each key of ``{secret: NAME, keys: [...]}`` from the
    Kubernetes Secret NAME by reference (``valueFrom.secretKeyRef``): no value is written."""
    if not spec:
        return []
    name, keys = spec.get("secret"), spec.get("keys")
    if not isinstance(name, str) or not name or not isinstance(keys, list) or not keys:
        raise ConfigError(f"{where}: expected {{secret: NAME, keys: [KEY, ...]}}, got {spec!r}")
    return [{"name": k, "valueFrom": {"secretKeyRef": {"name": name, "key": k}}} for k in keys]


def step_settings(stack: str, infra: Path = INFRA) -> tuple[dict, dict]:
    """``(pipeline settings, {step id: step configuration})`` of ``infra/settings/<stack>``.

    ``secret_env`` (``{secret, keys}``) is added to the ``env`` of every pod settings block of
    every role (orchestrator's and step operator's), as Secret references."""
    path = infra / "settings" / f"{stack_file(stack, infra).stem}.yaml"
    data = _read(path)
    env = secret_env(data.get("secret_env"), f"{path}: secret_env")
    steps: dict[str, dict] = {}
    for role, spec in (data.get("roles") or {}).items():
        if not spec.get("steps"):
            raise ConfigError(f"{path}: roles.{role}.steps is empty")
        conf = {"settings": copy.deepcopy(spec.get("settings", {}))}
        for block in conf["settings"].values():
            if env and isinstance(block, dict) and "pod_settings" in block:
                pod = block["pod_settings"]
                pod["env"] = [*pod.get("env", []), *copy.deepcopy(env)]
        if spec.get("step_operator"):
            conf["step_operator"] = spec["step_operator"]
        for step in spec["steps"]:
            if step in steps:
                raise ConfigError(f"{path}: step {step!r} is in two roles")
            steps[step] = copy.deepcopy(conf)
    return data.get("settings") or {}, steps


def run_config(
    profile: str | Path, stack: str, infra: Path = INFRA, image: str | None = None
) -> dict:
    """A ``zenml pipeline run -c`` document: ``profile`` plus ``stack``'s Docker settings,
    environment and per-step resources, step operators and pod settings (validated by ZenML).

    ``image``: a prebuilt image (built from ``infra/docker/Dockerfile``) that every step runs
    as it is (ZenML's ``parent_image`` + ``skip_build``; the code travels through the artifact
    store), instead of an image built for the run."""
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

    cfg = _read(Path(profile))
    settings, steps = step_settings(stack, infra)
    if image is not None:
        if not image or any(c.isspace() for c in image):
            raise ConfigError(f"image {image!r}: not an image reference")
        docker = {k: v for k, v in (settings.get("docker") or {}).items()
                  if k not in ("dockerfile", "build_context_root")}  # fmt: skip
        settings = {**settings, "docker": {**docker, "parent_image": image, "skip_build": True}}
    cfg = _merge(cfg, {"settings": settings} if settings else {})
    environment = _read(infra / "settings" / f"{stack}.yaml").get("environment")
    if environment:
        cfg["environment"] = {**environment, **(cfg.get("environment") or {})}
    cfg["steps"] = _merge(steps, cfg.get("steps") or {})  # the profile's own step config wins
    try:
        PipelineRunConfiguration.model_validate(cfg)
    except Exception as exc:  # pydantic's report, on one line
        msg = f"{profile} + infra/settings/{stack}.yaml: {exc}".replace("\n", " ")
        raise ConfigError(msg) from None
    return cfg
