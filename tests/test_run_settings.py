"""A run configuration's keys outside ``parameters:`` are ZenML's run settings: a key ZenML does
not read (``enable_cahce``) stops the run with one line naming the file and the key, instead of
being dropped silently; ``zenml pipeline run train_binaryfacenet`` (the bare name) resolves to
the pipeline."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from vlrface.errors import ConfigError
from vlrface.runs import check_run_settings

PROFILES = sorted((ROOT / "configs").glob("*.yaml"))


def write(tmp_path, raw: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_every_profile_uses_only_zenml_run_settings(path):
    check_run_settings(path)


def test_zenml_run_settings_stay_accepted(tmp_path):
    raw = {
        "enable_cache": False,
        "run_name": "r",
        "tags": ["a"],
        "settings": {"docker": {}},
        "steps": {"pretrain_model": {"enable_cache": False, "experiment_tracker": "m"}},
        "parameters": {"anything": 1},  # the pipeline's own schema judges these
    }
    check_run_settings(write(tmp_path, raw))


def test_a_misspelt_run_setting_names_file_and_key(tmp_path):
    path = write(tmp_path, {"enable_cahce": True, "parameters": {}})
    with pytest.raises(ConfigError) as err:
        check_run_settings(path)
    message = str(err.value)
    assert message.startswith(f"{path}: unknown key 'enable_cahce'") and "\n" not in message
    assert "did you mean 'enable_cache'" in message
    path = write(tmp_path, {"steps": {"pretrain_model": {"enable_cahce": True}}})
    with pytest.raises(ConfigError, match=r"unknown key 'steps\.pretrain_model\.enable_cahce'"):
        check_run_settings(path)
    path = write(tmp_path, {"model": {"name": "x"}, "seed": 0})  # a section outside parameters
    with pytest.raises(ConfigError, match=r"unknown key 'seed'.*go under 'parameters:'"):
        check_run_settings(path)


def test_bare_pipeline_name_runs_and_rejects_a_typo(tmp_path):
    """The bare name resolves to the pipeline (the typo is found by its body, which runs when
    ZenML compiles it); the CLI prints one line, no traceback, and runs no step."""
    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    cfg["enable_cahce"] = cfg.pop("enable_cache")
    bad = write(tmp_path, cfg)
    out = subprocess.run(
        [str(Path(sys.executable).with_name("zenml")), "pipeline", "run", "train_binaryfacenet"]
        + ["-c", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"Error: {bad}: unknown key 'enable_cahce'" in text, text[-2000:]
    assert "Traceback" not in text and "has started" not in text


def test_bare_name_module_is_the_pipeline():
    from zenml.utils import source_utils

    from pipelines import train_binaryfacenet

    assert source_utils.load("train_binaryfacenet") is train_binaryfacenet
