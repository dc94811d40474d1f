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
from vlrface.training.common import build_policy
from vlrface.training.keras import stage_from_config

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
        policy = build_policy(stage_cfg.degrade, total_steps=1000)
        if policy is not None:
            assert policy.policy_dict()["library"]


def test_the_papers_numbers():
    ms1m = parse(load(ROOT / "configs/ms1m_pretrain.yaml"))
    p = ms1m.pretrain
    assert (p.epochs, p.batch_size, p.lr, p.schedule.milestones, p.schedule.gamma) == (
        20,
        128,
        0.01,
        [9, 15, 18],
        0.1,
    )
    scale = p.head.params()["scale"]
    assert (p.momentum, p.weight_decay, scale, ms1m.model.channels) == (0.9, 5e-4, 16, 64)
    for name in ("casia_finetune_area", "casia_finetune_bicubic"):
        f = parse(load(ROOT / f"configs/{name}.yaml")).finetune
        assert (f.epochs, f.lr, f.schedule.milestones) == (20, 0.01, [9, 15, 18])
        assert f.degrade["down"] == f.degrade["up"] == name.rsplit("_", 1)[1]


def test_teacher_student_and_its_baseline_are_expressible():
    raw = load(ROOT / "configs/tc_binaryfacenet_lce.yaml")
    tc = parse(raw).finetune
    assert tc.teacher.lam == 0.1 and tc.degrade["kind"] == "curriculum"
    assert build_policy(tc.degrade, 500).total_steps == 500  # the stage's steps
    ntnc = copy.deepcopy(raw)
    ntnc["finetune"].update(teacher=None, degrade={"kind": "massoli", "probability": 0.5})
    assert parse(ntnc).finetune.teacher is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"degrade": {"kind": "curriculum", "bse": {}}}, r"'finetune.degrade'.*\['bse'\]"),
        ({"head": {"kind": "cosface", "h": 1.0}}, r"\['h'\] do not apply to loss 'cosface'"),
        ({"head": {"kind": "arcface", "scale": "big"}}, "scale must be a number"),
        ({"head": {"kind": "focal"}}, "'finetune.head.kind'.*unknown loss 'focal'"),
        ({"schedule": {"kind": "plateau", "patience": -1}}, "'finetune.schedule.patience'"),
        ({"schedule": {"kind": "cosine"}}, "'finetune.schedule.kind'"),
        ({"resume": True}, "need 'checkpoint_dir'"),
        # the deprecated keys are still checked, by their own names
        ({"policy": {"kind": "curriculum", "bse": {}}}, r"'finetune.policy'.*\['bse'\]"),
        ({"policy": {"kind": "fixed"}, "vlr": {"probability": 0.5}}, r"\['policy', 'vlr'\]"),
        ({"loss": "cosface", "loss_params": {"h": 1.0}}, r"\['h'\] do not apply to loss 'cosface'"),
        ({"loss": "focal"}, "'finetune.head.kind'.*unknown loss 'focal'"),
        ({"loss": "arcface", "head": {"kind": "arcface"}}, "give 'head' or the deprecated"),
        ({"schedule": "plateau", "plateau": {"patience": 0}}, "'finetune.plateau.patience'"),
        ({"teacher": {"lam": 0.1}}, "either 'path' or 'model'"),
        ({"strategy": "tpu"}, "'finetune.strategy'"),
        # local worker processes go with multi_worker only; process loaders need workers
        ({"processes": 2}, r"'finetune': processes: 2 needs strategy: multi_worker"),
        ({"strategy": "mirrored", "processes": 2}, "processes: 2 needs strategy: multi_worker"),
        ({"strategy": "multi_worker", "processes": 0}, "'finetune.processes'"),
        ({"loader_kind": "process"}, "loader_kind: process needs loader_workers >= 1"),
        ({"loader_kind": "fork", "loader_workers": 2}, "'finetune.loader_kind'"),
    ],
)
def test_bad_training_keys_are_named(change, message):
    raw = load(ROOT / "configs/tc_binaryfacenet_lce.yaml")
    raw["finetune"] = {"epochs": 1, **change}
    with pytest.raises(ConfigError, match=message):
        parse(raw, "profile")


OLD_KERAS_STAGE = {
    "epochs": 3,
    "schedule": "plateau",
    "plateau": {"patience": 3, "factor": 0.5},
    "milestones": [1],  # ignored by a plateau schedule, as it always was
    "loss": "laplacian",
    "loss_params": {"scale": 32.0, "statistic": "var"},
    "arcface_scale": 8.0,  # applied to ArcFace only, as it always was
    "vlr": {"probability": 0.5, "sizes": [7, 14]},
}
NEW_KERAS_STAGE = {
    "epochs": 3,
    "schedule": {"kind": "plateau", "patience": 2, "factor": 0.5, "threshold": 1e-4},
    "head": {"kind": "laplacian", "scale": 32.0, "statistic": "var"},
    "degrade": {"kind": "fixed", "probability": 0.5, "sizes": [7, 14], "down": "area",
                "up": "area"},
}  # fmt: skip


def test_old_keras_keys_parse_as_the_new_ones_with_one_deprecation_line_each(caplog):
    raw = load(ROOT / "configs/demo.yaml")
    old = {**raw, "pretrain": OLD_KERAS_STAGE, "finetune": OLD_KERAS_STAGE}
    with caplog.at_level("WARNING", logger="vlrface.config"):
        parsed = parse(old, "old")
    assert parsed == parse({**raw, "pretrain": NEW_KERAS_STAGE, "finetune": NEW_KERAS_STAGE})
    lines = [r.getMessage() for r in caplog.records]
    for old_key, new_key in [
        ("loss", "head.kind"),
        ("loss_params", "head.<param>"),
        ("arcface_scale", "head.scale"),
        ("vlr", "degrade"),
        ("schedule: plateau", "schedule: {kind: plateau}"),
        ("milestones", "schedule.milestones"),
        ("plateau", "schedule.patience p - 1"),
    ]:
        said = [m for m in lines if f"'{old_key}' is deprecated" in m]
        assert len(said) == 1, (old_key, lines)  # one line, though both stages use the key
        assert new_key in said[0]
    assert "loss_params" not in parsed.finetune.model_dump()  # never dumped, never logged


def test_old_torch_keys_parse_as_the_new_ones(caplog):
    from vlrface.config.torch import parse_torch

    raw = load(ROOT / "configs/crossres_demo.yaml")
    old = copy.deepcopy(raw)
    old["finetune"]["workers"] = 2
    new = copy.deepcopy(raw)
    new["finetune"]["loader_workers"] = 2
    with caplog.at_level("WARNING", logger="vlrface.config"):
        assert parse_torch(old) == parse_torch(new)
    assert [r.getMessage() for r in caplog.records] == [
        "config key 'workers' is deprecated (it still works): use 'loader_workers'"
    ]


def test_processes_need_ddp_on_the_torch_track(tmp_path):
    """A profile file with ``processes: 2`` but no ``ddp: true``: one line naming the file and
    the key; ``workers`` stays the deprecated ``loader_workers``, not the processes."""
    from vlrface.config.common import load_file
    from vlrface.config.torch import TorchPipelineConfig

    raw = load(ROOT / "configs/crossres_demo.yaml")
    raw["finetune"]["processes"] = 2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"parameters": raw}))
    with pytest.raises(ConfigError) as err:
        load_file(path, TorchPipelineConfig)
    assert str(err.value) == (
        f"{path}: invalid value for 'finetune': processes: 2 needs ddp: true (one process "
        "otherwise)"
    )
    raw["finetune"].update(ddp=True, workers=3)
    path.write_text(yaml.safe_dump({"parameters": raw}))
    stage = load_file(path, TorchPipelineConfig).finetune
    assert (stage.processes, stage.loader_workers, stage.ddp) == (2, 3, True)


def test_shipped_profiles_use_the_new_keys(caplog):
    with caplog.at_level("WARNING", logger="vlrface.config"):
        for path in PROFILES:
            if pipeline_of(path) == "train_binaryfacenet":
                parse(load(path), path.name)
            else:
                from vlrface.config.torch import parse_torch

                parse_torch(load(path), path.name)
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]


def test_the_loss_table_feeds_both_tracks_configs(monkeypatch):
    """The allowed ``head.kind`` values and their parameters are the rows of ``LOSS_HEADS``."""
    from vlrface.config.torch import parse_torch
    from vlrface.losses import heads

    keras_raw = load(ROOT / "configs/demo.yaml")
    torch_raw = load(ROOT / "configs/crossres_demo.yaml")

    def with_head(raw, head):
        return {**raw, "finetune": {**raw["finetune"], "head": head}}

    for kind in heads.LOSSES:  # every loss parses on both tracks
        parse(with_head(keras_raw, {"kind": kind}))
        parse_torch(with_head(torch_raw, {"kind": kind}))
    with pytest.raises(ConfigError, match="known: " + ", ".join(heads.LOSSES)):
        parse(with_head(keras_raw, {"kind": "toy"}))
    row = heads.LossHead(heads.LOSS_HEADS["cosface"].keras, heads.LOSS_HEADS["cosface"].torch,
                         {"margin": float})  # fmt: skip
    monkeypatch.setitem(heads.LOSS_HEADS, "toy", row)
    cfg = parse_torch(with_head(torch_raw, {"kind": "toy", "margin": 1}))
    assert cfg.finetune.head.params() == {"margin": 1.0}
    with pytest.raises(ConfigError, match=r"\['scale'\] do not apply to loss 'toy'"):
        parse(with_head(keras_raw, {"kind": "toy", "scale": 2.0}))


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
