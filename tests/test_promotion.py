"""Promotion policy, atomic promotion, history, rollback and the model card, on a real MLflow
sqlite registry in a temp dir. Versions are made directly (``MlflowClient`` + small artifact
files) with the tags ``vlrface/registration.py`` writes; the pipeline is not run here."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import ROOT
from vlrface import provenance, registry
from vlrface.cli import main
from vlrface.promotion import PolicyError, evaluate, load_policy, parse_policy

POLICY = {
    "metrics": [
        {"metric": "eval.t.hr_lr.14.acc", "direction": "higher", "min_improvement": 0.0},
        {"metric": "eval.t.hr_lr.7.acc", "direction": "higher", "min_improvement": -0.01},
    ],
    "latency": {"budget_ms": "pipeline"},
    "parity": {"cosine_min": 0.95},
    "gates": ["data", "parity", "latency"],
}


def new_store(root) -> dict:
    """A fresh sqlite registry under ``root`` with file artifacts, an experiment, and a policy
    file (``POLICY``)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("t", artifact_location=(root / "artifacts").as_uri())
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    return {"root": root, "uri": uri, "client": client, "exp": exp, "policy": str(policy)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return new_store(tmp_path_factory.mktemp("registry"))


def make_version(store, name, acc14, acc7, *, parity=0.99, ms=40.0, budget=150.0, gate=True):
    """A version as vlrface/registration.py leaves it: files under <run>/model, their sha256,
    and the provenance, gate, metric and latency tags."""
    client = store["client"]
    run = client.create_run(store["exp"])
    folder = store["root"] / "files" / run.info.run_id / "model"
    folder.mkdir(parents=True)
    (folder / "backbone.keras").write_bytes(os.urandom(256))
    (folder / f"{name}.tflite").write_bytes(b"\x00\x00\x00\x00TFL3" + os.urandom(64))
    files = {p.name: provenance.sha256_file(p) for p in sorted(folder.iterdir())}
    client.log_artifacts(run.info.run_id, str(folder), "model")
    config = {"seed": 3, "model": {"name": "binaryfacenet", "channels": 8, "embedding": 16}}
    client.log_dict(run.info.run_id, config, registry.CONFIG_ARTIFACT)
    client.set_terminated(run.info.run_id)
    tags = {
        "git_sha": "0123456789abcdef",
        "git_dirty": "false",
        "dvc_md5": "d41d8cd98f00b204e9800998ecf8427e.dir",
        "data.synthetic": "true",
        "data.dataset": "t",
        "config_hash": provenance.config_hash(config),
        "seed": "3",
        "latency.source": "estimated",
        "pkg.mlflow": "3.17.2",
        **{f"sha256.{k}": v for k, v in files.items()},
        "gate.data": "passed",
        "gate.parity": "passed",
        "gate.latency": "passed" if gate else "failed",
        "metric.eval.t.hr_lr.14.acc": f"{acc14:.6g}",
        "metric.eval.t.hr_lr.7.acc": f"{acc7:.6g}",
        "metric.eval.t.hr_hr.112.acc": "0.9",
        "metric.export.lce.parity.cosine_min": f"{parity:.6g}",
        "metric.export.lce.binary_macs": "184992256",
        "metric.export.lce.float_macs": "3850752",
        "metric.export.lce.binary_mac_share": "0.979617",
        "latency.raspberry-pi-4.ms": f"{ms:.3f}",
        "latency.raspberry-pi-4.budget_ms": f"{budget:.6g}",
        "latency.raspberry-pi-4.source": "estimated",
    }
    mv = registry.register(client, name, f"{run.info.artifact_uri}/model", run.info.run_id, tags)
    return int(mv.version)


def cli(store, *args):
    return CliRunner().invoke(main, [*args, "--tracking-uri", store["uri"]])


def promote(store, name, *args):
    return cli(store, "promote", "--model", name, "--policy", store["policy"], *args)


def champion_of(store, name):
    mv = registry.champion(store["client"], name)
    return int(mv.version) if mv else None


def rule(decision: dict, name: str) -> dict:
    return next(r for r in decision["rules"] if r["rule"] == name)


def test_policy_parsing_is_strict_and_names_key_and_file(tmp_path):
    def bad(raw, text):
        path = tmp_path / "p.yaml"
        path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
        with pytest.raises(PolicyError) as exc:
            load_policy(path)
        assert str(exc.value) == f"{path}: {text}"

    bad({**POLICY, "metrix": []}, "unknown key 'metrix'")
    m = {"metric": "a", "directon": "higher", "direction": "higher"}
    bad({**POLICY, "metrics": [m]}, "unknown key 'metrics.0.directon'")
    bad({**POLICY, "metrics": [{"metric": "a"}]}, "missing required key 'metrics.0.direction'")
    bad(
        {**POLICY, "latency": {"budget_ms": "pipeline", "allow_estimate": False}},
        "unknown key 'latency.allow_estimate'",
    )
    bad({**POLICY, "parity": {"cosine_min": 0.9, "max": 1}}, "unknown key 'parity.max'")
    with pytest.raises(PolicyError, match=r"invalid value for 'metrics.0.direction'"):
        parse_policy({"metrics": [{"metric": "a", "direction": "up"}]}, "x.yaml")
    with pytest.raises(PolicyError, match=r"x.yaml: .*'latency.budget_ms'.*toaster"):
        parse_policy({"latency": {"budget_ms": {"toaster": 5}}}, "x.yaml")
    with pytest.raises(PolicyError, match=r"unknown gate\(s\) \['speed'\]"):
        parse_policy({"gates": ["data", "speed"]}, "x.yaml")
    with pytest.raises(PolicyError, match="listed twice"):
        parse_policy({"metrics": [POLICY["metrics"][0]] * 2}, "x.yaml")
    bad("metrics: [\n", "not valid YAML at line 2")
    bad("", "a promotion policy must be a non-empty mapping")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")
    # the shipped default parses and says what it checks
    default = load_policy(ROOT / "mlflow" / "promotion.yaml")
    assert default.metrics[0].metric == "eval.demo.hr_lr.14.acc"
    assert default.parity.cosine_min == 0.98 and default.latency.budget_ms == "pipeline"
    assert default.gates == ["data", "parity", "latency"]


def test_evaluate_reports_every_rule_with_numbers():
    policy = parse_policy({**POLICY, "latency": {"budget_ms": {"raspberry-pi-4": 30}}}, "p")
    champ = registry.record_from_tags({"metric.eval.t.hr_lr.14.acc": "0.8"}, 1)
    chal = registry.record_from_tags(
        {
            "gate.data": "passed",
            "gate.parity": "passed",
            "gate.latency": "failed",
            "metric.eval.t.hr_lr.14.acc": "0.8",
            "metric.export.lce.parity.cosine_min": "0.9",
            "latency.raspberry-pi-4.ms": "45.5",
            "latency.raspberry-pi-4.source": "estimated",
        },
        2,
    )
    d = evaluate(policy, chal, champ).as_dict()
    assert d["promote"] is False
    assert rule(d, "gate.latency")["passed"] is False
    assert rule(d, "parity") == {
        "rule": "parity",
        "passed": False,
        "reason": "export.lce.parity.cosine_min 0.9 < floor 0.95",
        "challenger": 0.9,
        "champion": None,
        "threshold": 0.95,
    }
    assert rule(d, "latency.raspberry-pi-4")["challenger"] == 45.5
    assert rule(d, "latency.raspberry-pi-4")["threshold"] == 30
    tie = rule(d, "metric.eval.t.hr_lr.14.acc")  # a tie does not beat by more than 0
    assert (tie["passed"], tie["challenger"], tie["champion"], tie["threshold"]) == (
        False,
        0.8,
        0.8,
        0.8,
    )
    assert rule(d, "metric.eval.t.hr_lr.7.acc")["reason"] == "challenger has no eval.t.hr_lr.7.acc"
    # measured figures only: an estimate within its budget still fails
    measured_only = parse_policy({"latency": {"allow_estimated": False}}, "p")
    chal["latency"]["raspberry-pi-4"]["budget_ms"] = 150.0
    d = evaluate(
        measured_only, {**chal, "gates": dict.fromkeys(("data", "parity", "latency"), True)}
    )
    r = rule(d.as_dict(), "latency.raspberry-pi-4")
    assert not r["passed"] and "needs a measured figure and this one is estimated" in r["reason"]
    assert d.promote is False
    # emulated or better: an estimate fails, an emulated figure counts, a measured one too
    emulated_min = parse_policy({"latency": {"min_source": "emulated"}}, "p")
    gates = dict.fromkeys(("data", "parity", "latency"), True)
    for source, ok in (("estimated", False), ("emulated", True), ("measured", True)):
        chal["latency"]["raspberry-pi-4"]["source"] = source
        d = evaluate(emulated_min, {**chal, "gates": gates}).as_dict()
        r = rule(d, "latency.raspberry-pi-4")
        assert r["passed"] is ok, (source, r)
        if not ok:
            assert "needs an emulated figure and this one is estimated" in r["reason"]
    with pytest.raises(PolicyError, match="min_source"):
        parse_policy({"latency": {"min_source": "guessed"}}, "p")


def test_refuse_promote_dry_run_rollback_and_history(store):
    name, client = "lowres", store["client"]
    v1 = make_version(store, name, acc14=0.80, acc7=0.60)
    first = promote(store, name, "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["rules"][0]["reason"] == "gate 'data' passed"
    assert champion_of(store, name) == v1

    # beats on 14 px, drops 0.05 on 7 px: refused with both rules and their numbers
    v2 = make_version(store, name, acc14=0.85, acc7=0.55)
    out = promote(store, name, "--version", str(v2), "--json")
    assert out.exit_code == 3, out.output
    d = json.loads(out.stdout)
    assert d["decision"] == "refused" and d["champion_version"] == v1 and d["recorded"]
    r14, r7 = rule(d, "metric.eval.t.hr_lr.14.acc"), rule(d, "metric.eval.t.hr_lr.7.acc")
    assert (r14["passed"], r14["challenger"], r14["champion"], r14["threshold"]) == (
        True,
        0.85,
        0.8,
        0.8,
    )
    assert (r7["passed"], r7["challenger"], r7["champion"]) == (False, 0.55, 0.6)
    assert r7["threshold"] == pytest.approx(0.59)
    assert "0.85 beats champion v1 0.8" in r14["reason"]
    assert "0.55 does not beat champion v1 0.6" in r7["reason"] and "0.59" in r7["reason"]
    assert champion_of(store, name) == v1
    tags = client.get_model_version(name, str(v2)).tags
    assert tags["promotion.decision"] == "refused"
    assert r14["reason"] in json.loads(tags["promotion.reasons"])
    assert r7["reason"] in json.loads(tags["promotion.reasons"])

    # a passing challenger: dry run first changes nothing, then it is promoted in one move
    v3 = make_version(store, name, acc14=0.86, acc7=0.595)
    model_before = client.get_registered_model(name)
    tags_before = dict(client.get_model_version(name, str(v3)).tags)
    dry = promote(store, name, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith(
        f"{name} v{v3} vs v{v1} under {store['policy']}: would be promoted"
    )
    assert "FAIL" not in dry.stdout
    model_after = client.get_registered_model(name)
    assert (model_after.tags, model_after.aliases) == (model_before.tags, model_before.aliases)
    assert dict(client.get_model_version(name, str(v3)).tags) == tags_before

    ok = promote(store, name)
    assert ok.exit_code == 0, ok.output
    assert "PROMOTED" in ok.stdout.splitlines()[0]
    assert champion_of(store, name) == v3
    assert client.get_registered_model(name).aliases == {"champion": v3}
    assert client.get_model_version(name, str(v3)).tags["promotion.decision"] == "promoted"
    again = promote(store, name, "--version", str(v3))  # already champion: nothing to do
    assert again.exit_code == 0 and "already is the champion" in again.stdout

    # rollback: back to v1, recorded; a second one has no previous champion left
    back = cli(store, "promote", "--model", name, "--rollback", "--json")
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["version"] == v1
    assert champion_of(store, name) == v1
    assert client.get_model_version(name, str(v3)).tags["promotion.decision"] == "rolled back"
    none_left = cli(store, "promote", "--model", name, "--rollback")
    assert none_left.exit_code == 1
    assert none_left.stderr.strip().startswith("Error: no previous champion of 'lowres'")
    assert len(none_left.stderr.strip().splitlines()) == 1
    assert champion_of(store, name) == v1

    hist = cli(store, "models", "history", "--name", name, "--json")
    assert hist.exit_code == 0, hist.output
    events = json.loads(hist.stdout)
    assert [(e["event"], e["version"]) for e in events] == [
        ("rollback", v1),
        ("promote", v3),
        ("refuse", v2),
        ("promote", v1),
    ]
    assert [e["at"] for e in events] == sorted((e["at"] for e in events), reverse=True)
    assert (events[0]["previous"], events[0]["champion"]) == (v3, v1)
    assert (events[1]["previous"], events[1]["champion"]) == (v1, v3)
    assert (events[2]["previous"], events[2]["champion"]) == (v1, v1)
    assert rule(events[2], "metric.eval.t.hr_lr.7.acc")["challenger"] == 0.55
    text = cli(store, "models", "history", "--name", name)
    lines = text.stdout.splitlines()
    assert len(lines) == 4 and " rollback " in lines[0] and "champion v3 -> v1" in lines[0]
    assert "eval.t.hr_lr.7.acc 0.55 does not beat" in lines[2]

    listed = json.loads(cli(store, "models", "list", "--name", name, "--json").stdout)
    assert [(r["version"], r["aliases"], r["decision"]) for r in listed] == [
        (v3, [], "rolled back"),
        (v2, [], "refused"),
        (v1, ["champion"], "promoted"),
    ]
    assert listed[0]["gates"] == {"data": True, "parity": True, "latency": True}
    rows = cli(store, "models", "list", "--name", name).stdout.splitlines()
    assert rows[0].split() == [
        "model",
        "version",
        "aliases",
        "decision",
        "gates",
        "t.hr_hr.112.acc",
        "t.hr_lr.14.acc",
        "t.hr_lr.7.acc",
    ]
    assert len(rows) == 4 and "{" not in "\n".join(rows)
    assert rows[3].split()[:3] == [name, str(v1), "champion"] and rows[3].endswith("0.6")


def test_sha256_mismatch_refuses_naming_the_file(store):
    name = "tampered"
    v1 = make_version(store, name, acc14=0.7, acc7=0.5)
    assert promote(store, name).exit_code == 0
    v2 = make_version(store, name, acc14=0.9, acc7=0.6)
    source = store["client"].get_model_version(name, str(v2)).source
    path = Path(source.removeprefix("file://")) / "backbone.keras"
    path.write_bytes(path.read_bytes() + b"x")
    out = promote(store, name, "--version", str(v2))
    assert out.exit_code == 1
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("Error: sha256 mismatch: backbone.keras of v2 is ")
    assert err.endswith("nothing promoted")
    assert champion_of(store, name) == v1
    assert store["client"].get_model_version(name, str(v2)).tags["promotion.decision"] == (
        "refused"
    )


def test_unknown_model_and_version_are_one_line_errors(store):
    make_version(store, "known", acc14=0.7, acc7=0.5)
    for args, message in [
        (("--model", "nosuch"), "Error: unknown registered model 'nosuch'"),
        (
            ("--model", "known", "--version", "9"),
            "Error: registered model 'known' has no version 9",
        ),
    ]:
        out = cli(store, "promote", *args, "--policy", store["policy"])
        assert out.exit_code == 1 and out.stderr.strip() == message
    out = cli(store, "models", "card", "--name", "known", "--version", "4")
    assert out.exit_code == 1 and out.stderr.strip() == (
        "Error: registered model 'known' has no version 4"
    )
    assert champion_of(store, "known") is None
    out = cli(store, "promote", "--model", "known", "--policy", str(store["root"] / "nope.yaml"))
    assert out.exit_code == 1 and out.stderr.strip().startswith("Error: ")
    assert "cannot read the promotion policy" in out.stderr


def test_unreachable_registry_fails_fast_with_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "vlrface", "promote", "--model", "m", "--dry-run"]
        + ["--tracking-uri", "http://127.0.0.1:9"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - start
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "Error: cannot reach the MLflow registry at http://127.0.0.1:9: connection refused"
    ]
    assert took < 60, took  # interpreter + mlflow import; MLflow's default retries take minutes
    for args in (("models", "list"), ("models", "history")):
        start = time.monotonic()
        res = CliRunner().invoke(main, [*args, "--tracking-uri", "http://127.0.0.1:9"])
        assert res.exit_code == 1 and "cannot reach the MLflow registry" in res.stderr
        assert time.monotonic() - start < 10


def test_model_card_has_the_numbers(store):
    name, client = "carded", store["client"]
    v1 = make_version(store, name, acc14=0.8125, acc7=0.6, ms=41.25)
    assert promote(store, name).exit_code == 0
    v2 = make_version(store, name, acc14=0.79, acc7=0.61, ms=42.5)
    assert promote(store, name, "--version", str(v2)).exit_code == 3
    out = cli(store, "models", "card", "--name", name, "--version", str(v2))
    assert out.exit_code == 0, out.output
    card = out.stdout
    tags = client.get_model_version(name, str(v2)).tags
    assert card.startswith(f"# Model card: {name} v{v2}\n")
    assert "SYNTHETIC" in card
    assert "| DVC md5 | d41d8cd98f00b204e9800998ecf8427e.dir |" in card
    assert f"| config hash (sha256) | {tags['config_hash']} |" in card
    assert "| model.channels | 8 |" in card  # from the logged pipeline configuration
    assert "| eval.t.hr_lr.14.acc | 0.79 |" in card
    assert "| binary MACs | 184,992,256 |" in card and "| float MACs | 3,850,752 |" in card
    assert "| binary_mac_share | 0.979617 |" in card
    assert "| raspberry-pi-4 | 42.5 | 150 | estimated | True |" in card
    assert "| latency | passed |" in card
    assert "- decision: **refused**" in card and f"- champion at the time: v{v1}" in card
    assert (
        "| metric.eval.t.hr_lr.14.acc | FAIL | 0.79 | 0.8125 | 0.8125 | "
        "eval.t.hr_lr.14.acc 0.79 does not beat champion v1 0.8125" in card
    )
    assert f"| backbone.keras | {tags['sha256.backbone.keras']} |" in card
    # the card logged with the version's run is the same document
    assert registry.refresh_card(client, name, v2) == card
    logged = Path(client.download_artifacts(tags_run(client, name, v2), registry.CARD))
    assert logged.read_text() == card


def tags_run(client, name, version):
    return client.get_model_version(name, str(version)).run_id


def _onnx_tags(parity: str | None) -> dict:
    """An ONNX version's tags as the PyTorch track registers them (``register_torch``)."""
    tags = {
        "model.format": "onnx",
        **{f"gate.{g}": "passed" for g in ("data", "parity", "latency")},
        "latency.source": "unavailable",
        "latency.raspberry-pi-4.source": "unavailable",
        "metric.eval.demo.hr_lr.14.acc": "0.81",
        "metric.eval.demo.hr_lr.7.acc": "0.6",
        "metric.eval.demo.hr_hr.112.acc": "0.9",
        "metric.export.onnx.params": "1234567",
        "metric.export.onnx.size_bytes": "4938268",
        "metric.export.onnx.host_ms": "12.5",
    }
    if parity is not None:
        tags["metric.export.onnx.parity.cosine_min"] = parity
    return tags


def test_onnx_versions_promote_under_the_shipped_policy():
    policy = load_policy(ROOT / "mlflow" / "promotion.yaml")
    d = evaluate(policy, registry.record_from_tags(_onnx_tags("0.99999"), 1)).as_dict()
    assert d["promote"] is True, d["reasons"]
    assert rule(d, "parity")["reason"] == "export.onnx.parity.cosine_min 0.99999 >= floor 0.98"
    low = evaluate(policy, registry.record_from_tags(_onnx_tags("0.5"), 1)).as_dict()
    assert low["promote"] is False
    assert rule(low, "parity")["reason"] == "export.onnx.parity.cosine_min 0.5 < floor 0.98"
    missing = evaluate(policy, registry.record_from_tags(_onnx_tags(None), 1)).as_dict()
    assert missing["promote"] is False
    assert rule(missing, "parity")["reason"] == "no export.onnx.parity.cosine_min recorded"
    # neither a format tag nor a parity metric: the message names what would count
    bare = {k: v for k, v in _onnx_tags(None).items() if k != "model.format"}
    unknown = evaluate(policy, registry.record_from_tags(bare, 1)).as_dict()
    assert rule(unknown, "parity")["reason"] == (
        "no export parity metric recorded "
        "(export.lce.parity.cosine_min or export.onnx.parity.cosine_min)"
    )
    # an older ONNX version without the format tag is known by its parity metric
    old = {k: v for k, v in _onnx_tags("0.999").items() if k != "model.format"}
    assert registry.record_from_tags(old, 1)["format"] == "onnx"
    assert evaluate(policy, registry.record_from_tags(old, 1)).promote


def test_model_card_lists_the_figures_of_the_versions_own_format():
    from vlrface.reports.model_card import render

    card = render({"name": "sq", "version": 1, "tags": _onnx_tags("0.99999")})
    assert "ONNX model (`export.onnx.*`):" in card
    assert "| parameters | 1,234,567 |" in card and "| ONNX size (bytes) | 4,938,268 |" in card
    assert "| parity cosine min (PyTorch vs onnxruntime) | 0.99999 |" in card
    assert "binary MACs" not in card and "flatbuffer size" not in card
    lce = render({"name": "b", "version": 1, "tags": {"metric.export.lce.binary_macs": "5000"}})
    assert "LCE flatbuffer (`export.lce.*`):" in lce and "| binary MACs | 5,000 |" in lce
    assert "ONNX" not in lce
    assert "no export figures recorded" in render({"name": "x", "version": 1, "tags": {}})
