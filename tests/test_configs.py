"""Every profile in configs/ parses (data roots and checkpoints need not exist to parse: the
pipeline resolves the data version and the pretrained file only when it is compiled), and the
training sections build what the trainer runs."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from tests.conftest import ROOT
from vlrface.config.keras import parse
from vlrface.errors import ConfigError
from vlrface.training.keras import build_policy, stage_from_config

PROFILES = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # profiles name repo-relative files (e.g. a promotion policy)


def load(path):
    return yaml.safe_load(path.read_text())["parameters"]


def pipeline_of(path) -> str:
    """The pipeline a profile is for, from its ``zenml pipeline run pipelines.<name>`` line."""
    found = re.search(r"zenml pipeline run pipelines\.(\w+)", path.read_text())
    assert found, f"{path.name}: no 'zenml pipeline run pipelines.<name>' usage line"
    return found.group(1)


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_profile_parses_and_builds(path):
    if pipeline_of(path) != "train_binaryfacenet":  # the PyTorch pipelines' own schema
        from vlrface.config.torch import parse_torch

        parse_torch(load(path), path.name)
        return
    cfg = parse(load(path), path.name)
    for stage_cfg in (cfg.pretrain, cfg.finetune):
        if stage_cfg is None:
            continue
        stage = stage_from_config(stage_cfg)
        assert stage.epochs >= 1 and stage.schedule.initial_state() is not None
        policy = build_policy(stage_cfg.policy_config(), total_steps=1000)
        if policy is not None:
            assert policy.policy_dict()["library"]


def test_the_papers_numbers():
    ms1m = parse(load(ROOT / "configs/ms1m_pretrain.yaml"))
    p = ms1m.pretrain
    assert (p.epochs, p.batch_size, p.lr, p.milestones, p.gamma) == (
        20,
        128,
        0.01,
        [9, 15, 18],
        0.1,
    )
    assert (p.momentum, p.weight_decay, p.arcface_scale, ms1m.model.channels) == (0.9, 5e-4, 16, 64)
    for name in ("casia_finetune_area", "casia_finetune_bicubic"):
        f = parse(load(ROOT / f"configs/{name}.yaml")).finetune
        assert (f.epochs, f.lr, f.milestones) == (20, 0.01, [9, 15, 18])
        assert f.policy["down"] == f.policy["up"] == name.rsplit("_", 1)[1]


def test_teacher_student_and_its_baseline_are_expressible():
    raw = load(ROOT / "configs/tc_binaryfacenet_lce.yaml")
    tc = parse(raw).finetune
    assert tc.teacher.lam == 0.1 and tc.policy["kind"] == "curriculum"
    assert build_policy(tc.policy_config(), 500).total_steps == 500  # the stage's steps
    ntnc = copy.deepcopy(raw)
    ntnc["finetune"].update(teacher=None, policy={"kind": "massoli", "probability": 0.5})
    assert parse(ntnc).finetune.teacher is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"policy": {"kind": "curriculum", "bse": {}}}, r"'finetune.policy'.*\['bse'\]"),
        ({"policy": {"kind": "fixed"}, "vlr": {"probability": 0.5}}, "either 'vlr'"),
        ({"loss": "cosface", "loss_params": {"h": 1.0}}, r"\['h'\].*cosface"),
        ({"loss": "focal"}, "'finetune.loss'"),
        ({"resume": True}, "need 'checkpoint_dir'"),
        ({"schedule": "plateau", "plateau": {"patience": 0}}, "'finetune.plateau.patience'"),
        ({"teacher": {"lam": 0.1}}, "either 'path' or 'model'"),
        ({"strategy": "tpu"}, "'finetune.strategy'"),
    ],
)
def test_bad_training_keys_are_named(change, message):
    raw = load(ROOT / "configs/tc_binaryfacenet_lce.yaml")
    raw["finetune"] = {"epochs": 1, **change}
    with pytest.raises(ConfigError, match=message):
        parse(raw, "profile")


def test_pytorch_track_runs_protocols_on_its_onnx_model():
    """``evaluation.protocols`` is validated on the PyTorch track as on the Keras one: its
    metric names count for promotion; ``model: lce`` (the Keras flatbuffer) is refused."""
    from vlrface.config.torch import parse_torch

    raw = load(ROOT / "configs/crossres_demo.yaml")
    lfw = {"name": "lfw", "root": "data/lfw", "resolutions": [14]}
    raw["evaluation"] = {**raw.get("evaluation", {}), "protocols": [lfw]}
    raw["registry"] = {**raw["registry"], "policy": None, "compare_metric": "eval.lfw.hr_lr.14.acc"}
    assert "eval.lfw.hr_lr.14.acc" in parse_torch(raw).metric_names()
    raw["evaluation"]["protocols"] = [{**lfw, "model": "lce"}]
    with pytest.raises(ConfigError, match=r"evaluation\.protocols\.0\.model: 'lce'"):
        parse_torch(raw, "crossres_demo.yaml")
