"""Team mode end to end on real servers: PostgreSQL 15, a local S3 (moto) and an MLflow server
(runs and registry in PostgreSQL, artifacts in S3), all on loopback (``vlrface.team``).

A store that is wrong, missing or refuses credentials is named and nothing is registered; the
stack switch (``ensure_team_stack``) moves ZenML's artifacts to S3 and MLflow to the server;
DVC pushes the data to the S3 remote and pulls it back; a demo-sized pipeline registers and
promotes on the team server. Needs the `team` extra and PostgreSQL 15 server binaries (CI:
root on Debian 12 with postgresql-15; initdb runs as `postgres` through runuser).
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import dvc
from vlrface.errors import StoreError

pytestmark = [pytest.mark.team, pytest.mark.pipeline]

pytest.importorskip("boto3", reason="the team extra is not installed")
pytest.importorskip("psycopg2", reason="the team extra is not installed")


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The three servers on free loopback ports, and their environment set for the module."""
    from vlrface import team as services

    try:
        services.pg_bin("initdb")
    except StoreError as exc:
        pytest.skip(str(exc))
    state = tmp_path_factory.mktemp("team")
    ports = {name: services.free_port() for name in services.DEFAULT_PORTS}
    env = services.up(state, ports)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        try:
            yield env
        finally:
            services.down(state)


@pytest.fixture(scope="module")
def previous_stack():
    from zenml.client import Client

    name = Client().active_stack_model.name
    yield name
    Client().activate_stack(name)  # the other modules' local stack again


def _components(name_prefix: str) -> list[str]:
    from zenml.client import Client
    from zenml.enums import StackComponentType

    found = []
    for ctype in StackComponentType:
        found += [c.name for c in Client().list_stack_components(type=ctype).items]
    return [n for n in found if n.startswith(name_prefix)]


def test_bad_stores_are_named_and_nothing_registered(team, previous_stack, monkeypatch):
    from vlrface.stack import ensure_team_stack

    uri, s3 = team["MLFLOW_TRACKING_URI"], team["VLRFACE_S3_ENDPOINT"]
    wrong_port = uri.rsplit(":", 1)[0] + ":9"
    with pytest.raises(StoreError, match=r"MLflow tracking server http://127.0.0.1:9: unreachable"):
        ensure_team_stack(wrong_port, s3, "vlrface-zenml")
    with pytest.raises(StoreError, match=r"artifact store s3://no-such-bucket .*does not exist"):
        ensure_team_stack(uri, s3, "no-such-bucket")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    with pytest.raises(StoreError, match=r"artifact store s3://vlrface-zenml: no credentials"):
        ensure_team_stack(uri, s3, "vlrface-zenml")
    assert _components("vlrface_team") == []


@pytest.fixture(scope="module")
def team_stack(team, previous_stack):
    from zenml.client import Client

    from vlrface.stack import ensure_team_stack

    name = ensure_team_stack(
        team["MLFLOW_TRACKING_URI"], team["VLRFACE_S3_ENDPOINT"], "vlrface-zenml"
    )
    stack = Client().active_stack
    assert name == "vlrface_team" and stack.name == name
    assert stack.artifact_store.path == "s3://vlrface-zenml"
    assert stack.experiment_tracker.get_tracking_uri() == team["MLFLOW_TRACKING_URI"]
    return name


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def project(team, tmp_path_factory):
    """A DVC repo whose data went to the S3 remote and came back from it."""
    import shutil

    from vlrface.data.synthetic import write_casia_layout

    proj = tmp_path_factory.mktemp("team-project")
    root = proj / "data" / "casia-webface-synthetic"
    write_casia_layout(root, identities=14, images_per_identity=4, seed=3, progress=False)
    dvc("init", "--no-scm", "-q", cwd=proj)
    dvc("remote", "add", "-d", "team", "s3://vlrface-dvc/vlrface", cwd=proj)
    dvc("remote", "modify", "team", "endpointurl", team["VLRFACE_S3_ENDPOINT"], cwd=proj)
    dvc("add", "-q", "data", cwd=proj)
    before = _digest(proj / "data")
    dvc("push", "-q", cwd=proj)
    shutil.rmtree(proj / "data")
    shutil.rmtree(proj / ".dvc" / "cache")
    dvc("pull", "-q", cwd=proj)
    assert _digest(proj / "data") == before
    return proj


def test_dvc_pushes_and_pulls_through_s3(team, project):
    import boto3

    s3 = boto3.client("s3", endpoint_url=team["VLRFACE_S3_ENDPOINT"], region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="vlrface-dvc").get("Contents", [])]
    images = list((project / "data").rglob("*.jpg")) + list((project / "data").rglob("*.png"))
    assert images and len(keys) >= len(images)  # every file a content-addressed object
    assert all(k.startswith("vlrface/files/md5/") for k in keys)
    # a remote that does not exist is named by DVC (no silent success)
    dvc("remote", "add", "nowhere", "s3://no-such-bucket/x", cwd=project)
    dvc("remote", "modify", "nowhere", "endpointurl", team["VLRFACE_S3_ENDPOINT"], cwd=project)
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "push", "-r", "nowhere"],
        cwd=project, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0 and "bucket does not exist" in done.stderr


def test_pipeline_registers_and_promotes_on_the_team_server(team, team_stack, project):
    import boto3
    import psycopg2
    from mlflow import MlflowClient

    from tests.test_pipeline import run, write_config

    config = write_config(project, "team", evaluation={"protocols": []})
    result = run(config)
    assert str(result.status) == "completed"
    client = MlflowClient(team["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias("tinyfacenet", "champion")
    assert champion.version == "1" and champion.tags["promotion.decision"] == "promoted"
    files = client.list_artifacts(champion.run_id)
    assert files  # served by the MLflow server from S3
    s3 = boto3.client("s3", endpoint_url=team["VLRFACE_S3_ENDPOINT"], region_name="us-east-1")
    for bucket in ("vlrface-mlflow", "vlrface-zenml"):
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) > 0, bucket
    with psycopg2.connect(team["VLRFACE_POSTGRES_URI"]) as db, db.cursor() as cur:
        cur.execute("select name from registered_models order by name")
        names = [r[0] for r in cur.fetchall()]
        cur.execute("select count(*) from runs")
        (runs,) = cur.fetchone()
    assert {"tinyfacenet", "tinyfacenet-finetuned", "tinyfacenet-pretrained"} <= set(names)
    assert runs >= 1
