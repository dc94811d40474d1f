"""Team mode on one machine: PostgreSQL 15, a local S3 (moto) and an MLflow server on loopback.

``up(state_dir)`` starts the three real servers as a team would run them (MLflow's runs and
registry in PostgreSQL, its artifacts in S3 served through the server), creates the buckets
(``vlrface-mlflow`` for MLflow, ``vlrface-zenml`` for ZenML's artifact store, ``vlrface-dvc``
for the DVC remote) and writes ``<state_dir>/env`` (shell exports) and ``state.json`` (process
ids, ports, data directory). ``down(state_dir)`` stops exactly the processes it started.

PostgreSQL refuses to run as root: as root, ``initdb``/``pg_ctl`` run as the ``postgres`` user
(``runuser``) on a data directory made for it. Everything listens on 127.0.0.1 only.
Used by ``make team-up`` / ``make team-down`` and the end-to-end team test.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from vlrface.errors import StoreError

BUCKETS = ("vlrface-mlflow", "vlrface-zenml", "vlrface-dvc")
# the local S3 accepts any key; these are what team mode exports for it (not secrets)
LOCAL_S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "vlrface-local",
    "AWS_SECRET_ACCESS_KEY": "vlrface-local",
}
DEFAULT_PORTS = {"postgres": 15432, "s3": 19000, "mlflow": 15080}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name: str) -> str:
    """``initdb``/``pg_ctl`` of the newest installed PostgreSQL (PATH first)."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise StoreError(
            f"PostgreSQL: {name} not found (apt-get install postgresql-15, or put its bin/ on PATH)"
        )
    return found


def _as_pg_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _wait(what: str, ready, timeout: float, proc: subprocess.Popen | None, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-1500:] if log.exists() else ""
            raise StoreError(f"{what}: exited with {proc.returncode} while starting; {log}: {tail}")
        try:
            if ready():
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise StoreError(f"{what}: not ready after {timeout:.0f} s (log: {log})")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def _spawn(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def stop_groups(procs: list[subprocess.Popen], timeout: float = 15) -> None:
    """SIGTERM the process group each of ``procs`` leads (``start_new_session``), wait up to
    ``timeout`` seconds for each, then SIGKILL the group of any still running."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def up(state_dir: str | Path, ports: dict | None = None, mlflow_timeout: float = 120) -> dict:
    """Start PostgreSQL, the local S3 and the MLflow server; returns the environment to use."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / "state.json").exists():
        raise StoreError(f"{state_dir}/state.json: team services already up (make team-down)")
    ports = {**DEFAULT_PORTS, **(ports or {})}
    state: dict = {"ports": ports, "pids": {}}
    try:
        _up(state_dir, ports, state, mlflow_timeout)
    except BaseException:
        _stop(state)
        raise
    (state_dir / "state.json").write_text(json.dumps(state, indent=1))
    env = state["env"]
    (state_dir / "env").write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    return env


def _up(state_dir: Path, ports: dict, state: dict, mlflow_timeout: float) -> None:
    # PostgreSQL: a fresh cluster in a temp dir the postgres user owns, trust auth on loopback
    data = Path(tempfile.mkdtemp(prefix="vlrface-pg-"))
    state["pg_data"] = str(data)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    data.chmod(0o700)
    pg_log = data / "server.log"
    run = dict(check=True, capture_output=True, text=True)
    try:
        subprocess.run(
            _as_pg_user([pg_bin("initdb"), "-D", str(data / "db"), "-U", "vlrface",
                         "--auth=trust", "-E", "UTF8", "--no-instructions"]),
            **run,
        )  # fmt: skip
        subprocess.run(
            _as_pg_user([pg_bin("pg_ctl"), "-D", str(data / "db"), "-l", str(pg_log), "-w",
                         "-o", f"-p {ports['postgres']} -k {data} -c listen_addresses=127.0.0.1",
                         "start"]),
            **run,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise StoreError(
            f"PostgreSQL: {Path(exc.cmd[-1]).name if exc.cmd else 'start'} failed: "
            f"{(exc.stderr or exc.stdout or '').strip()[-500:]}"
        ) from None
    state["pg_started"] = True
    subprocess.run(
        [pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(ports["postgres"]), "-U", "vlrface",
         "mlflow"],
        **run,
    )  # fmt: skip
    db_uri = f"postgresql://vlrface@127.0.0.1:{ports['postgres']}/mlflow"

    env = {**os.environ, **LOCAL_S3_CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"}
    bindir = Path(sys.executable).parent
    # the local S3
    s3_log = state_dir / "s3.log"
    moto = _spawn(
        [str(bindir / "moto_server"), "-H", "127.0.0.1", "-p", str(ports["s3"])], s3_log, env
    )
    state["pids"]["s3"] = moto.pid
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    _wait("local S3 (moto)", lambda: _http_ok(endpoint + "/moto-api/"), 60, moto, s3_log)
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=LOCAL_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    for bucket in BUCKETS:
        s3.create_bucket(Bucket=bucket)

    # MLflow: runs and registry in PostgreSQL, artifacts proxied to S3
    ml_log = state_dir / "mlflow.log"
    tracking = f"http://127.0.0.1:{ports['mlflow']}"
    ml_env = {**env, "MLFLOW_S3_ENDPOINT_URL": endpoint, "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = _spawn(
        [str(bindir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(ports["mlflow"]),
         "--workers", "1", "--backend-store-uri", db_uri,
         "--artifacts-destination", f"s3://{BUCKETS[0]}"],
        ml_log,
        ml_env,
    )  # fmt: skip
    state["pids"]["mlflow"] = server.pid
    _wait("MLflow server", lambda: _http_ok(tracking + "/health"), mlflow_timeout, server, ml_log)
    state["env"] = {
        "MLFLOW_TRACKING_URI": tracking,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "VLRFACE_S3_ENDPOINT": endpoint,
        "VLRFACE_POSTGRES_URI": db_uri,
        # promotion locks the champion in the registry's own store (vlrface.registry)
        "VLRFACE_REGISTRY_LOCK_URI": db_uri,
        "AWS_DEFAULT_REGION": "us-east-1",
        **LOCAL_S3_CREDENTIALS,
    }


def _stop(state: dict) -> None:
    for name in ("mlflow", "s3"):
        pid = state["pids"].get(name)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)  # the group it leads (mlflow's uvicorn workers)
        except ProcessLookupError:
            continue
        for _ in range(40):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            try:  # reap it if it is our child
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                pass
            time.sleep(0.25)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    data = state.get("pg_data")
    if data and state.get("pg_started"):
        subprocess.run(
            _as_pg_user([pg_bin("pg_ctl"), "-D", f"{data}/db", "-m", "fast", "-w", "stop"]),
            capture_output=True,
        )
    if data:
        shutil.rmtree(data, ignore_errors=True)


def down(state_dir: str | Path) -> bool:
    """Stop what ``up`` started in ``state_dir``; False if nothing was up."""
    path = Path(state_dir) / "state.json"
    if not path.exists():
        return False
    _stop(json.loads(path.read_text()))
    path.unlink()
    (Path(state_dir) / "env").unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m vlrface.team", description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--dir", default=".team")
    for name, port in DEFAULT_PORTS.items():
        p.add_argument(f"--{name}-port", type=int, default=port)
    a = p.parse_args(argv)
    try:
        if a.action == "up":
            ports = {n: getattr(a, f"{n}_port") for n in DEFAULT_PORTS}
            env = up(a.dir, ports)
            print(f"team services up; `source {a.dir}/env`, then:")
            print(
                f"  vlrface stack setup --team --tracking-uri {env['MLFLOW_TRACKING_URI']} "
                f"--s3-endpoint {env['VLRFACE_S3_ENDPOINT']} --bucket vlrface-zenml"
            )
        else:
            print("team services stopped" if down(a.dir) else f"nothing up in {a.dir}")
    except StoreError as exc:
        sys.exit(f"Error: {exc}")


if __name__ == "__main__":
    main()
