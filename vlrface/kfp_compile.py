"""Compile a pipeline to its Kubeflow Pipelines spec on this machine, with no cluster.

ZenML's Kubeflow orchestrator writes the KFP YAML before it uploads it, given what it checks
first: a ZenML *server* (not a local SQL store), a remote artifact store, a container registry
URI, a ``kubeflow_hostname``/Kubernetes context and an image. ``compile_spec`` provides each for
real, on loopback: a ZenML server (``zenml[server]``, in its own venv: it pins fastapi
differently from the project, see ``ensure_server_venv``), a local S3 (moto) behind the stack's
S3 artifact store, a kubeconfig whose context points at an unused port, and a prebuilt image
reference (``skip_build``: no Docker here). It imports ``infra/stacks/kubeflow.yaml`` with the S3
endpoint pointed at the local S3, runs ``zenml pipeline run`` with the profile merged with
``infra/settings/kubeflow.yaml`` (``vlrface.infra.run_config``), and keeps the YAML ZenML wrote;
the upload then fails (no Kubeflow there) and ZenML still exits 0. ``summary`` reads a spec back
per task (image, resources, env, node selector, tolerations, Secret references).

    python -m vlrface.kfp_compile --out build/kfp        # make infra-check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from vlrface.errors import ConfigError, StoreError
from vlrface.infra import run_config, stack_definition
from vlrface.team import LOCAL_S3_CREDENTIALS, _http_ok, _spawn, _wait, free_port, stop_groups

ROOT = Path(__file__).resolve().parents[1]
# the ZenML server's venv (built on first use); VLRFACE_ZENML_SERVER_VENV: one you keep elsewhere
SERVER_VENV = Path(os.environ.get("VLRFACE_ZENML_SERVER_VENV", ROOT / ".infra" / "zenml-server"))
IMAGE = "registry.example.org/vlrface/vlrface:0.1.0"
# what the server venv gets: ZenML's server extra at the project's ZenML version, and the
# kubernetes client its Kubernetes/Kubeflow flavors validate pod settings with (server side too)
SERVER_REQUIREMENTS = ["zenml[server]==0.98.0", "kubernetes==25.3.0"]
# pins of constraints.txt that zenml[server] requires otherwise (fastapi>=0.138,<0.139)
SERVER_UNPINNED = ("fastapi",)
PLACEHOLDER_SECRETS = {
    "vlrface_s3": {
        "aws_access_key_id": LOCAL_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": LOCAL_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    },
    "vlrface_mlflow": {"username": "vlrface", "password": "vlrface-local"},
}


def ensure_server_venv(venv: Path = SERVER_VENV, python: str = sys.executable) -> Path:
    """The ZenML server's venv at ``venv``, created (about a minute) when it is missing: pip with
    the project's constraints except the pins ZenML's server extra sets itself."""
    venv = Path(venv)
    py = venv / "bin" / "python"
    stamp = venv / ".installed"
    want = " ".join(SERVER_REQUIREMENTS)
    if stamp.is_file() and stamp.read_text().strip() == want and py.is_file():
        return venv
    base = getattr(sys, "_base_executable", python) or python
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    keep = [ln for ln in lines if ln.split("==")[0].strip().lower() not in SERVER_UNPINNED]
    cons = venv / "constraints.txt"
    cons.write_text("\n".join(keep) + "\n")
    done = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(cons),
         *SERVER_REQUIREMENTS],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        raise StoreError(f"ZenML server venv {venv}: pip failed: {done.stderr.strip()[-800:]}")
    stamp.write_text(want + "\n")
    return venv


KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
  - name: vlrface
    cluster: {server: "https://127.0.0.1:%d"}
users:
  - name: vlrface
    user: {token: unused}
contexts:
  - name: vlrface
    context: {cluster: vlrface, user: vlrface, namespace: vlrface}
current-context: vlrface
"""


def compile_spec(
    out: Path,
    profile: str | Path = ROOT / "configs" / "ms1m_pretrain.yaml",
    pipeline: str = "train_binaryfacenet",
    venv: Path = SERVER_VENV,
    image: str = IMAGE,
    secrets: dict | None = None,
    timeout: float = 900,
) -> Path:
    """Compile ``pipeline`` with ``profile`` on the kubeflow stack; returns ``out/<pipeline>.yaml``.

    The profile's data root is replaced by an empty folder outside DVC (the pipeline resolves
    the data version when it is compiled; no step runs here). ``secrets``: the values of the
    ZenML secrets the stack references (placeholders by default)."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = Path(venv) / "bin" / "python"
    if not py.is_file():
        raise StoreError(f"ZenML server venv {venv}: missing (make infra-server-venv)")
    work = Path(tempfile.mkdtemp(prefix="vlrface-kfp-", dir=out))
    bindir = Path(sys.executable).parent
    procs: list[subprocess.Popen] = []
    ok = False
    try:
        s3_port, zen_port = free_port(), free_port()
        endpoint, server = f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{zen_port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("ZENML_", "KUBECONFIG"))}
        s3_env = {**base, **LOCAL_S3_CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"}
        log = work / "s3.log"
        moto = _spawn([str(bindir / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], log,
                      s3_env)  # fmt: skip
        procs.append(moto)
        _wait("local S3 (moto)", lambda: _http_ok(endpoint + "/moto-api/"), 300, moto, log)
        import boto3

        bucket = stack_definition("kubeflow")["components"]["artifact_store"]["configuration"]
        bucket = bucket["path"].removeprefix("s3://").split("/")[0]
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id=LOCAL_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=LOCAL_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                     ).create_bucket(Bucket=bucket)  # fmt: skip

        # the server and the client each get a ZenML repository of their own: found from the
        # working directory instead (the project's root), either would make its stack the
        # checkout's active one (.zen/config.yaml)
        for repo in ("server-repo", "repo"):
            (work / repo / ".zen").mkdir(parents=True)
        server_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "ZENML_CONFIG_PATH": str(work / "server"),
            "ZENML_REPOSITORY_PATH": str(work / "server-repo"),
            "ZENML_STORE_URL": f"sqlite:///{work / 'server.db'}",
            "ZENML_SERVER_AUTH_SCHEME": "NO_AUTH",
            "ZENML_SERVER_DEPLOYMENT_TYPE": "local",
            "ZENML_SERVER_AUTO_ACTIVATE": "True",
            "ZENML_ANALYTICS_OPT_IN": "false",
        }
        log = work / "server.log"
        zen = _spawn([str(py), "-m", "uvicorn", "zenml.zen_server.zen_server_api:app",
                      "--host", "127.0.0.1", "--port", str(zen_port)], log, server_env)  # fmt: skip
        procs.append(zen)
        _wait("ZenML server", lambda: _http_ok(server + "/health"), 600, zen, log)

        (work / "kubeconfig").write_text(KUBECONFIG % free_port())
        (work / "faces").mkdir()
        (work / "faces" / "README").write_text("compile only: no step reads this folder\n")
        env = {
            **base,
            "ZENML_CONFIG_PATH": str(work / "client"),
            "ZENML_REPOSITORY_PATH": str(work / "repo"),
            "ZENML_STORE_URL": server,
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_ENABLE_RICH_TRACEBACK": "false",
            "ZENML_CUSTOM_SOURCE_ROOT": str(ROOT),
            "KUBECONFIG": str(work / "kubeconfig"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "TF_USE_LEGACY_KERAS": "1",
        }
        doc = stack_definition("kubeflow")
        store = doc["components"]["artifact_store"]["configuration"]
        store["client_kwargs"] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        (work / "stack.yaml").write_text(yaml.safe_dump(doc))
        cfg = run_config(profile, "kubeflow", image=image)
        cfg.setdefault("parameters", {}).setdefault("data", {}).update(
            root=str(work / "faces"), dvc_file=None
        )
        cfg["run_name"] = f"{pipeline}-kfp-compile"
        (work / "run.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        (work / "secrets.json").write_text(json.dumps({**PLACEHOLDER_SECRETS, **(secrets or {})}))
        # one client process: secrets, the flavor, the stack, the run (each zenml CLI call would
        # import ZenML again)
        log = work / "client.log"
        cmd = [sys.executable, "-m", "vlrface.kfp_compile", "client", str(work), pipeline]
        with log.open("w") as f:
            try:
                done = subprocess.run(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                      timeout=timeout)  # fmt: skip
            except subprocess.TimeoutExpired:
                raise StoreError(
                    f"kubeflow compile: no spec in {timeout:.0f} s (log: {log})"
                ) from None
        if done.returncode:
            lines = [ln.strip() for ln in log.read_text().splitlines() if ln.strip()]
            last = lines[-1][-300:] if lines else "no output"
            raise StoreError(f"kubeflow compile: the ZenML client failed: {last} (log: {log})")
        specs = sorted((work / "client").glob("kubeflow/*/pipelines/*.yaml"))
        if not specs:
            raise StoreError(
                f"kubeflow compile: ZenML wrote no KFP spec (log: {work / 'client.log'})"
            )
        target = out / f"{pipeline}.yaml"
        shutil.copyfile(specs[-1], target)
        shutil.copyfile(log, out / f"{pipeline}.log")
        ok = True
        return target
    finally:
        stop_groups(procs)
        if ok:
            shutil.rmtree(work, ignore_errors=True)  # kept when it failed: its logs name why


def _client(work: Path, pipeline: str) -> None:
    """The client side of ``compile_spec``, in the environment it prepared."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    for name, values in json.loads((work / "secrets.json").read_text()).items():
        client.create_secret(name, values=values)
    client.create_flavor(
        source="vlrface.kubeflow.VlrfaceKubeflowOrchestratorFlavor",
        component_type=StackComponentType.ORCHESTRATOR,
    )
    doc = yaml.safe_load((work / "stack.yaml").read_text())
    comps = {}
    for kind, comp in doc["components"].items():
        client.create_stack_component(
            name=comp["name"],
            flavor=comp["flavor"],
            component_type=StackComponentType(kind),
            configuration=comp.get("configuration") or {},
        )
        comps[StackComponentType(kind)] = comp["name"]
    client.create_stack(name=doc["stack_name"], components=comps)
    client.activate_stack(doc["stack_name"])
    from pipelines import PIPELINES

    PIPELINES[pipeline].with_options(config_path=str(work / "run.yaml"))()


def _resources(res: dict) -> dict:
    acc = res.get("accelerator") or {}
    return {  # the resource* fields are KFP's strings, as given; the others its float forms
        "cpu": res.get("resourceCpuLimit", res.get("cpuLimit")),
        "cpu_request": res.get("resourceCpuRequest", res.get("cpuRequest")),
        "memory": res.get("resourceMemoryLimit", res.get("memoryLimit")),
        "memory_request": res.get("resourceMemoryRequest", res.get("memoryRequest")),
        "accelerator": acc.get("resourceType") or acc.get("type"),
        "accelerator_count": acc.get("resourceCount") or acc.get("count"),
    }


def summary(spec: str | Path) -> dict:
    """``{step: {image, command, resources, env, node_selector, tolerations, secret_env}}`` of a
    compiled KFP spec (its pipeline document and Kubernetes platform document)."""
    docs = [d for d in yaml.safe_load_all(Path(spec).read_text()) if d]
    if not docs or "deploymentSpec" not in docs[0]:
        raise ConfigError(f"{spec}: not a KFP pipeline spec")
    pipe = docs[0]
    platform = next((d for d in docs[1:] if "platforms" in d), {})
    k8s = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
    executors = pipe["deploymentSpec"]["executors"]
    out = {}
    for task_name, task in pipe["root"]["dag"]["tasks"].items():
        step = task.get("taskInfo", {}).get("name", task_name)
        label = pipe["components"][task["componentRef"]["name"]]["executorLabel"]
        container = executors[label]["container"]
        plat = k8s.get("executors", {}).get(label, {})
        out[step] = {
            "task": task_name,
            "after": sorted(task.get("dependentTasks", [])),
            "image": container["image"],
            "command": container.get("command", []),
            "args": container.get("args", []),
            "resources": _resources(container.get("resources", {})),
            "env": {e["name"]: e.get("value") for e in container.get("env", [])},
            "node_selector": (plat.get("nodeSelector") or {}).get("labels", {}),
            "tolerations": plat.get("tolerations", []),
            "secret_env": {
                m[
                    "envVar"
                ]: f"{s.get('secretName') or s['secretNameParameter']['runtimeValue']['constant']}/{m['secretKey']}"  # noqa: E501
                for s in plat.get("secretAsEnv", [])
                for m in s.get("keyToEnv", [])
            },
        }
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        return _client(Path(argv[1]), argv[2])
    p = argparse.ArgumentParser(
        prog="python -m vlrface.kfp_compile", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", default="build/kfp", help="where the spec goes")
    p.add_argument("--profile", default=str(ROOT / "configs" / "ms1m_pretrain.yaml"))
    p.add_argument("--pipeline", default="train_binaryfacenet")
    p.add_argument("--venv", default=str(SERVER_VENV), help="the ZenML server's venv")
    p.add_argument("--image", default=IMAGE)
    p.add_argument("--make-venv", action="store_true", help="create the server venv if missing")
    a = p.parse_args(argv)
    try:
        if a.make_venv:
            ensure_server_venv(Path(a.venv))
        t0 = time.monotonic()
        spec = compile_spec(Path(a.out), a.profile, a.pipeline, Path(a.venv), a.image)
        tasks = summary(spec)
    except (ConfigError, StoreError) as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps({"spec": str(spec), "seconds": round(time.monotonic() - t0, 1),
                      "tasks": tasks}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
