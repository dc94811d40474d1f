"""The evaluation suite (``vlrface.protocols.suite``) on the LFW and TinyFace fixtures, and the
``evaluation.protocols`` configuration: same metrics as the runners, figures written, strict
names, and a Keras model and its LCE flatbuffer through the same code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_protocols import Oracle, Projection
from vlrface.config.keras import parse
from vlrface.data.fixtures.lfw import write_lfw
from vlrface.data.fixtures.tinyface import write_tinyface
from vlrface.errors import ConfigError, DataError
from vlrface.preprocess import load_face
from vlrface.protocols import runners
from vlrface.protocols.common import prepare
from vlrface.protocols.suite import evaluate_suite, known_metric_names

STAGE = {"epochs": 1}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    lfw, tiny = tmp_path_factory.mktemp("lfw"), tmp_path_factory.mktemp("tinyface")
    return {"lfw": lfw, "lfw_truth": write_lfw(lfw), "tinyface": tiny, "tiny": write_tinyface(tiny)}


def test_suite_gives_the_runners_metrics_and_writes_figures(roots, tmp_path):
    entries = [
        {"name": "lfw", "root": str(roots["lfw"]), "resolutions": [7, 14], "files": {}},
        {"name": "tinyface", "root": str(roots["tinyface"]), "resolutions": [8]},
    ]
    metrics, figures = evaluate_suite(Projection(), entries, tmp_path, progress=False)
    direct = {}
    for e in entries:
        m, _ = runners.run(
            e["name"], Projection(), e["root"], resolutions=e["resolutions"], progress=False
        )
        assert set(m) == set(known_metric_names(e)), e["name"]
        direct.update(m)
    assert metrics == pytest.approx(direct, abs=0, rel=0)
    assert set(figures) == {
        "eval/lfw/roc_lfw.png",
        "eval/lfw/det_lfw.png",
        "eval/tinyface/cmc_tinyface.png",
    }
    for rel, path in figures.items():
        assert path == tmp_path / rel and path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((tmp_path / "eval" / "lfw" / "metrics.json").read_text())
    assert record["model"] == "keras" and record["resolutions"] == [7, 14]
    assert record["metrics"] == {k: v for k, v in metrics.items() if k.startswith("eval.lfw.")}


def test_oracle_through_the_suite_is_perfect_and_picks_the_entrys_backend(roots, tmp_path):
    oracle, res = Oracle(), [7, 14]
    manifest = roots["lfw_truth"]["manifest"]
    for path, ident in zip(manifest["path"], manifest["identity"], strict=True):
        oracle.teach(prepare(load_face(roots["lfw"], path), center_crop=0.56), ident, res)
    entries = [
        # align none: the centre crop the oracle was taught (the entry's align reaches the runner)
        {"name": "lfw", "root": str(roots["lfw"]), "resolutions": res, "model": "lce"}
        | {"align": "none"},
        {"name": "tinyface", "root": str(roots["tinyface"]), "resolutions": []},
    ]
    # "lce" here is the oracle, "keras" a projection: each entry must get its own backend
    metrics, _ = evaluate_suite(
        {"keras": Projection(), "lce": oracle}, entries, tmp_path, progress=False
    )
    assert oracle.misses == 0
    lfw_acc = {k: v for k, v in metrics.items() if k.startswith("eval.lfw.") and k.endswith("acc")}
    assert lfw_acc and set(lfw_acc.values()) == {1.0}
    tiny, _ = runners.run("tinyface", Projection(), roots["tinyface"], progress=False)
    assert {k: v for k, v in metrics.items() if k.startswith("eval.tinyface.")} == tiny
    with pytest.raises(KeyError, match=r"evaluation\.protocols\[0\] \(lfw\)\.model.*'lce'"):
        evaluate_suite({"keras": Projection()}, entries[:1], tmp_path, progress=False)


def test_missing_root_or_file_is_a_data_error_naming_the_path(roots, tmp_path):
    missing = tmp_path / "nowhere"
    entries = [
        {"name": "tinyface", "root": str(roots["tinyface"])},
        {"name": "lfw", "root": str(missing)},
    ]
    with pytest.raises(DataError, match=r"evaluation\.protocols\[1\] \(lfw\)\.root: .*nowhere"):
        evaluate_suite(Projection(), entries, tmp_path, progress=False)
    assert not (tmp_path / "eval").exists()  # checked before any protocol ran
    bad_file = [{"name": "lfw", "root": str(roots["lfw"]), "files": {"pairs": "p.txt"}}]
    with pytest.raises(DataError, match=r"\.files\.pairs: .*p\.txt: file does not exist"):
        evaluate_suite(Projection(), bad_file, tmp_path, progress=False)


def test_keras_and_lce_backends_agree_through_the_same_runner(roots, tmp_path):
    from vlrface.embedders import KerasEmbedder, LCEEmbedder
    from vlrface.export.lce import convert
    from vlrface.models.keras.binaryfacenet_lce import build_binaryfacenet_lce

    model = build_binaryfacenet_lce(channels=8, embedding=16)
    backends = {"keras": KerasEmbedder(model), "lce": LCEEmbedder(convert(model))}
    entry = {"name": "lfw", "root": str(roots["lfw"]), "resolutions": [14]}
    out = {
        b: evaluate_suite(backends, [{**entry, "model": b}], tmp_path / b, progress=False)[0]
        for b in backends
    }
    assert set(out["keras"]) == set(out["lce"])
    keras, lce = (np.array([out[b][k] for k in sorted(out[b])]) for b in ("keras", "lce"))
    # binarised activations: a few sign flips may move a pair across a threshold
    np.testing.assert_allclose(keras, lce, atol=0.1)


def _config(**evaluation):
    registry = evaluation.pop("registry", {})
    return {"pretrain": STAGE, "finetune": STAGE, "evaluation": evaluation, "registry": registry}


def test_unknown_protocol_fails_at_parse_naming_it():
    with pytest.raises(
        ConfigError,
        match=r"^config: invalid value for 'evaluation\.protocols\.0\.name': "
        r"unknown protocol 'lfw2'; known: lfw, scface",
    ):
        parse(_config(protocols=[{"name": "lfw2", "root": "/does/not/matter"}]))


def test_protocol_entries_are_strict_but_roots_are_checked_later():
    ok = parse(_config(protocols=[{"name": "lfw", "root": "/not/yet/there"}]))
    assert ok.evaluation.protocols[0].model == "keras"
    with pytest.raises(ConfigError, match=r"'evaluation\.protocols\.0\.files'|do not apply"):
        parse(_config(protocols=[{"name": "lfw", "root": "x", "files": {"probe_mat": "a"}}]))
    with pytest.raises(ConfigError, match=r"unknown key 'evaluation\.protocols\.0\.rot'"):
        parse(_config(protocols=[{"name": "lfw", "rot": "x"}]))
    with pytest.raises(ConfigError, match=r"evaluation\.protocols\.0\.model"):
        parse(_config(protocols=[{"name": "lfw", "root": "x", "model": "onnx"}]))
    with pytest.raises(ConfigError, match=r"\['lfw'\] listed more than once"):
        parse(_config(protocols=[{"name": "lfw", "root": "x"}, {"name": "lfw", "root": "y"}]))


def test_compare_metric_may_name_a_protocol_metric():
    lfw = {"name": "lfw", "root": "x", "resolutions": [7, 14]}
    cfg = parse(_config(protocols=[lfw], registry={"compare_metric": "eval.lfw.hr_lr.14.acc"}))
    assert "eval.lfw.lr_lr.7.tar_far_1e-3" in cfg.metric_names()
    with pytest.raises(ConfigError, match=r"compare_metric 'eval\.lfw\.hr_lr\.21\.acc'"):
        parse(_config(protocols=[lfw], registry={"compare_metric": "eval.lfw.hr_lr.21.acc"}))
    # SCface names its metrics after the cameras in the data: only the prefix can be checked
    scface = {"name": "scface", "root": "x"}
    metric = "eval.scface.50_80.mean.rank1"
    assert parse(_config(protocols=[scface], registry={"compare_metric": metric}))
    with pytest.raises(ConfigError, match=r"compare_metric 'eval\.scface"):
        parse(_config(registry={"compare_metric": metric}))
    with pytest.raises(ConfigError, match=r"data\.name 'lfw' is also a protocol"):
        raw = _config(protocols=[lfw])
        raw["data"] = {"name": "lfw"}
        parse(raw)
