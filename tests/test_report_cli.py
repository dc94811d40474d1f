"""``vlrface report`` on a real MLflow sqlite registry in a temp dir: registered versions with
run metrics and ``metric.*`` tags (as ``vlrface/registration.py`` writes them), by alias and by
version, side by side in the papers' layouts, as Markdown and HTML."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from vlrface import registry
from vlrface.cli import main

LFW_RES = (7, 14, 28)


def _metrics(base: float) -> dict[str, float]:
    m = {}
    for i, r in enumerate(LFW_RES):
        m[f"eval.lfw.hr_lr.{r}.acc"] = base + 0.1 * i
        m[f"eval.lfw.hr_lr.{r}.acc_std"] = 0.01
        m[f"eval.lfw.lr_lr.{r}.acc"] = base + 0.05 * i
    for k in ("rank1", "rank20", "mAP"):
        m[f"eval.tinyface.devkit.native.{k}"] = base / 2
    return m


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("t", artifact_location=(root / "artifacts").as_uri())

    def version(name, metrics, *, log_run=True, extra_tags=None):
        run = client.create_run(exp)
        if log_run:
            for k, v in metrics.items():
                client.log_metric(run.info.run_id, k, v)
        client.log_metric(run.info.run_id, "train.loss", 1.0)  # not an eval.* metric
        client.set_terminated(run.info.run_id)
        tags = {"data.dataset": "tiny", "data.synthetic": "true", **(extra_tags or {})}
        if not log_run:  # only the registry tags know its metrics
            tags.update({f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()})
        mv = registry.register(
            client, name, f"{run.info.artifact_uri}/model", run.info.run_id, tags
        )
        return int(mv.version)

    v1 = version("facenet", _metrics(0.5))
    v2 = version("facenet", _metrics(0.6), log_run=False)
    v3 = version("facenet", {})
    client.set_registered_model_alias("facenet", "champion", str(v1))
    other = {"eval.lfw.hr_lr.7.acc": 0.9, "eval.scface.50_80.d1.rank1": 0.4}
    o1 = version("squeeze", other)
    return {"root": root, "uri": uri, "client": client, "v": (v1, v2, v3), "o1": o1}


def report(store, *args):
    return CliRunner().invoke(main, ["report", *args, "--tracking-uri", store["uri"]])


def test_champion_and_a_version_side_by_side(store, tmp_path):
    out = tmp_path / "report.md"
    res = report(store, "--model", "facenet@champion", "--model", "facenet@2", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "compared 2 model(s)" in res.output
    text = out.read_text()
    assert text.startswith("# Model comparison")
    # the models table names version, alias and dataset
    assert "| facenet v1 (champion) | facenet | 1 | champion | tiny | true |" in text
    # paper layout: models (rows) x resolutions (columns) of one metric
    assert "## lfw hr_lr: acc by resolution" in text
    assert "| model | 7 | 14 | 28 |" in text
    assert "| facenet v1 (champion) | 0.5000 | 0.6000 | 0.7000 |" in text
    # v2 has no run metrics: its metric.* tags are read
    assert "| facenet v2 | 0.6000 | 0.7000 | 0.8000 |" in text
    # one resolution only: its metrics become the columns (TinyFace's rank/mAP table)
    assert "## tinyface devkit at native" in text
    assert "| model | rank1 | rank20 | mAP |" in text
    # two models: every metric with the difference and the better one
    assert "## All evaluation metrics" in text
    assert "| eval.lfw.hr_lr.7.acc | 0.5000 | 0.6000 | 0.1000 | facenet v2 |" in text
    assert "| eval.lfw.hr_lr.7.acc_std | 0.0100 | 0.0100 | 0.0000 | = |" in text
    assert "train.loss" not in text
    assert not (tmp_path / "report.html").exists()


def test_several_models_and_html(store, tmp_path):
    out = tmp_path / "sub" / "cmp.md"
    args = ["--model", "facenet@1", "--model", "squeeze@1", "--model", "facenet@2"]
    res = report(store, *args, "--out", str(out), "--html", "--digits", "2")
    assert res.exit_code == 0, res.output
    text = out.read_text()
    # a model without a metric leaves its cell empty
    assert "| squeeze v1 | 0.90 |  |  |" in text
    assert "## scface 50_80 at d1" in text
    assert "delta" not in text  # only for two models
    page = (tmp_path / "sub" / "cmp.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<h2>lfw hr_lr: acc by resolution</h2>" in page and "<td>0.90</td>" in page


def test_errors_name_the_model(store, tmp_path):
    out = str(tmp_path / "r.md")
    res = report(store, "--model", "facenet@staging", "--out", out)
    assert res.exit_code == 1
    assert "--model facenet@staging: registered model 'facenet' has no alias 'staging'" in (
        res.output
    )
    res = report(store, "--model", "facenet@9", "--out", out)
    assert res.exit_code == 1 and "registered model 'facenet' has no version 9" in res.output
    res = report(store, "--model", "nobody@1", "--out", out)
    assert res.exit_code == 1 and "unknown registered model 'nobody'" in res.output
    res = report(store, "--model", "facenet@", "--out", out)
    assert res.exit_code == 2 and "expected <name>@<alias> or <name>@<version>" in res.output
    res = report(store, "--model", "facenet@3", "--out", out)
    assert res.exit_code == 1 and "no eval.* metrics recorded for facenet v3" in res.output
    res = report(store, "--model", "facenet@1", "--model", "facenet@champion", "--out", out)
    assert res.exit_code == 2 and "already in the report" in res.output
    assert not (tmp_path / "r.md").exists()


def test_stage_version_shows_its_own_metrics_not_its_runs(store, tmp_path):
    """A training stage's version shares the run with the exported version: the run's
    ``eval.*`` metrics are the exported version's, never the stage's."""
    client = store["client"]
    run = client.create_run(client.get_experiment_by_name("t").experiment_id)
    for k, v in _metrics(0.7).items():
        client.log_metric(run.info.run_id, k, v)
    client.set_terminated(run.info.run_id)
    base = run.info.artifact_uri
    registry.register(client, "joint", f"{base}/model", run.info.run_id, {"data.dataset": "tiny"})
    stage_tags = {"stage": "pretrain", "metric.pretrain.loss": "2.5"}
    registry.register(
        client, "joint-pretrained", f"{base}/stages/pretrain", run.info.run_id, stage_tags
    )
    out = tmp_path / "joint.md"
    res = report(
        store, "--model", "joint-pretrained@1", "--model", "models:/joint/1", "--out", str(out)
    )
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "| joint v1 | 0.7000 | 0.8000 | 0.9000 |" in text
    assert "| joint-pretrained v1 |  |  |  |" in text  # its own metrics: no eval.* at all
    assert "warning: joint-pretrained v1 has no eval.* metrics" in res.stderr
    # the model card of the stage version does not borrow the run's metrics either
    card = CliRunner().invoke(
        main,
        ["models", "card", "--name", "joint-pretrained", "--version", "1"]
        + ["--tracking-uri", store["uri"]],
    )
    assert card.exit_code == 0, card.output
    assert "eval.lfw" not in card.stdout and "no evaluation metrics recorded" in card.stdout


def test_html_tables_have_one_header_row(store, tmp_path):
    out = tmp_path / "one.md"
    res = report(store, "--model", "facenet@1", "--model", "facenet@2", "--out", str(out), "--html")
    assert res.exit_code == 0, res.output
    page = out.with_suffix(".html").read_text()
    heads = page.split("<thead>")[1:]
    assert heads and all(h.split("</thead>")[0].count("<tr") == 1 for h in heads)
    assert "<th>model</th>" in heads[0]
