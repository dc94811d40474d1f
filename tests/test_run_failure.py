"""A run that dies ends failed in ZenML and MLflow, never running: an exception and SIGTERM at
once (the hooks), SIGKILL when the next run starts (``runs.reap``). Real pipeline runs in child
processes on the test session's ZenML store and MLflow stack."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def stack(session_tmp):
    from vlrface.stack import ensure_local_stack

    ensure_local_stack(session_tmp / "mlflow", ["crash_test"])
    from vlrface.stack import active_tracking_uri

    return active_tracking_uri()


def run(how: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tests.crash_pipeline", how],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def latest(how_many: int = 1):
    from zenml.client import Client

    runs = Client().list_pipeline_runs(
        pipeline="crash_test", sort_by="desc:created", size=how_many, hydrate=True
    )
    return runs.items


def mlflow_status(uri: str, zen_run) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("crash_test")
    found = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.zenml_run_id = '{zen_run.id}'"
    ) or [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.info.run_name == zen_run.name or r.data.tags.get("zenml_run_id") == str(zen_run.id)
    ]
    assert found, f"no MLflow run for {zen_run.name}"
    return found[0].info.status


def test_killed_terminated_and_failed_runs_never_stay_running(stack):
    killed = run("kill")
    assert killed.returncode == -9
    k = latest()[0]
    assert str(k.status) == "running"  # what SIGKILL leaves, until the next start
    assert mlflow_status(stack, k) == "RUNNING"

    termed = run("term")
    assert termed.returncode != 0
    failed = run("raise")  # its start reaps the killed run
    assert failed.returncode != 0
    f, t, k2 = latest(3)
    assert k2.id == k.id
    from zenml.client import Client

    k = Client().get_pipeline_run(k.id)
    assert str(k.status) == "failed"
    assert all(str(s.status) == "failed" for s in k.steps.values())
    assert mlflow_status(stack, k) == "KILLED"
    for r in (t, f):
        assert str(r.status) == "failed", r.name
        assert mlflow_status(stack, r) == "FAILED", r.name
