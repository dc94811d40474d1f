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


def step_settings(stack: str, infra: Path = INFRA) -> tuple[dict, dict]:
    """``(pipeline settings, {step id: step configuration})`` of ``infra/settings/<stack>``."""
    path = infra / "settings" / f"{stack_file(stack, infra).stem}.yaml"
    data = _read(path)
    steps: dict[str, dict] = {}
    for role, spec in (data.get("roles") or {}).items():
        if not spec.get("steps"):
            raise ConfigError(f"{path}: roles.{role}.steps is empty")
        conf = {"settings": spec.get("settings", {})}
        if spec.get("step_operator"):
            conf["step_operator"] = spec["step_operator"]
        for step in spec["steps"]:
            if step in steps:
                raise ConfigError(f"{path}: step {step!r} is in two roles")
            steps[step] = copy.deepcopy(conf)
    return data.get("settings") or {}, steps


def run_config(profile: str | Path, stack: str, infra: Path = INFRA) -> dict:
    """A ``zenml pipeline run -c`` document: ``profile`` plus ``stack``'s Docker settings and
    per-step resources, step operators and pod settings (validated by ZenML)."""
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

    cfg = _read(Path(profile))
    settings, steps = step_settings(stack, infra)
    cfg = _merge(cfg, {"settings": settings} if settings else {})
    cfg["steps"] = _merge(steps, cfg.get("steps") or {})  # the profile's own step config wins
    try:
        PipelineRunConfiguration.model_validate(cfg)
    except Exception as exc:  # pydantic's report, on one line
        msg = f"{profile} + infra/settings/{stack}.yaml: {exc}".replace("\n", " ")
        raise ConfigError(msg) from None
    return cfg
