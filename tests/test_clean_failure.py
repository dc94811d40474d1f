"""Clean failure: store and parser failures are one ``Error:`` line and a non-zero exit from
the real CLI; a NUL byte in a manifest path is the project's error."""

import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.test_promotion import make_version, new_store
from vlrface.data.records import read_bytes
from vlrface.errors import DataError


def vlrface(*args, env=None, timeout=180):
    import os

    return subprocess.run(
        [sys.executable, "-m", "vlrface", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def store(tmp_path):
    return new_store(tmp_path)


def test_non_utf8_pairs_is_one_line_naming_file_and_line(tmp_path):
    from vlrface.data.fixtures.lfw import write_lfw

    write_lfw(tmp_path / "lfw")
    pairs = tmp_path / "lfw" / "pairs.txt"
    lines = pairs.read_bytes().split(b"\n")
    lines[2] = lines[2] + b"\xff\xfe"
    pairs.write_bytes(b"\n".join(lines))
    out = vlrface(
        "data", "manifest", "--dataset", "lfw", "--root", str(tmp_path / "lfw"),
        "--pairs", str(pairs), "--out", str(tmp_path / "m.parquet"),
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"Error: {pairs}:3: not valid utf-8 text (byte 0xff at offset "
        f"{len(b''.join(x + b'.' for x in lines[:2])) + len(lines[2]) - 2})"
    )
    assert "Traceback" not in out.stderr


def test_promote_against_a_locked_store_is_one_line(store):
    name = "locked"
    make_version(store, name, acc14=0.7, acc7=0.5)
    holder = sqlite3.connect(store["root"] / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        out = vlrface(
            "promote", "--model", name, "--policy", store["policy"], "--tracking-uri", store["uri"],
            env={"VLRFACE_STORE_RETRY_S": "1"},
        )  # fmt: skip
    finally:
        holder.execute("ROLLBACK")
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "database is locked" in errors[0], out.stderr
    assert "Traceback" not in out.stderr


def test_dry_run_that_would_refuse_exits_non_zero(store):
    name = "dry"
    make_version(store, name, acc14=0.7, acc7=0.5)
    assert vlrface("promote", "--model", name, "--policy", store["policy"],
                   "--tracking-uri", store["uri"]).returncode == 0  # fmt: skip
    make_version(store, name, acc14=0.6, acc7=0.5)
    out = vlrface("promote", "--model", name, "--policy", store["policy"], "--dry-run",
                  "--tracking-uri", store["uri"])  # fmt: skip
    assert out.returncode == 3 and "would be refused" in out.stdout


def test_nul_byte_in_a_manifest_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="holds a NUL byte"):
        read_bytes(tmp_path, "a\x00b.jpg")


def test_training_logging_outlives_a_store_outage(store, monkeypatch):
    """A locked tracking database mid-training: the epoch's metrics wait (bounded) and are
    logged when it comes back; if it stays down the loop goes on without them."""
    import threading
    import time

    import mlflow

    from vlrface import runs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    mlflow.set_tracking_uri(store["uri"])
    holder = sqlite3.connect(store["root"] / "mlflow.db", check_same_thread=False)
    holder.isolation_level = None
    with mlflow.start_run(experiment_id=store["exp"]) as run:
        holder.execute("BEGIN EXCLUSIVE")
        threading.Timer(1.5, lambda: holder.execute("ROLLBACK")).start()
        start = time.monotonic()
        assert runs.log_metrics_resilient({"loss": 1.0}, step=1, budget=30)
        assert time.monotonic() - start >= 1.5
        holder.execute("BEGIN EXCLUSIVE")  # and now it stays down past the budget
        try:
            assert not runs.log_metrics_resilient({"loss": 0.5}, step=2, budget=0.5)
        finally:
            holder.execute("ROLLBACK")
    history = mlflow.MlflowClient(store["uri"]).get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0)]
