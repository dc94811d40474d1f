"""Training on several processes: the Keras track with ``MultiWorkerMirroredStrategy``
(``TF_CONFIG``), the PyTorch track with ``DistributedDataParallel`` (gloo, ``torchrun``).

Both launchers write a job directory (``job.json``, ``manifest.parquet``, optional initial
weights), start N worker processes of ``python -m vlrface.distributed`` on loopback ports, wait
for them, and read the chief's result (rank/worker 0: the only writer of checkpoints and of the
result). Every worker computes the same global batch order from the seed and trains on its
``1/N`` share, so a run equals one process with the same global batch up to what the math
differs in: batch-norm statistics are per worker (per replica), as in ``MirroredStrategy``.

A worker that dies stops the run: the launcher ends the other workers (by their process ids),
raises ``DistributedTrainingError`` naming the worker, its exit status and its log, and the
last checkpoint stays; the same call with ``resume: true`` continues from it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vlrface.errors import VlrfaceError

KERAS_RESULT, TORCH_RESULT = "backbone.npz", "model.pt"


class DistributedTrainingError(VlrfaceError):
    """A worker process of a distributed run failed; the message names it and its log."""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _write_job(job_dir: Path, manifest: pd.DataFrame, **job) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    manifest.reset_index(drop=True).to_parquet(job_dir / "manifest.parquet")
    (job_dir / "job.json").write_text(json.dumps(job, indent=1))


def _terminate(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _tail(path: Path, n: int = 600) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return " | ".join(text[-n:].strip().splitlines()[-4:])


def _run_workers(cmds: list[tuple[list[str], dict, Path]], what: str, timeout: float) -> None:
    procs = []
    try:
        for cmd, env, log in cmds:
            with open(log, "wb") as out:
                procs.append(
                    subprocess.Popen(
                        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        deadline = time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in procs]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i = failed[0]
                _terminate(procs)
                who, code = f"worker {i}", codes[i]
                if len(procs) == 1:  # torchrun: its failure report names the rank
                    import re

                    log = cmds[i][2].read_text(errors="replace") if cmds[i][2].exists() else ""
                    cause = log[log.find("Root Cause") :] if "Root Cause" in log else ""
                    if m := re.search(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", cause, re.S):
                        who, code = f"rank {m.group(1)}", int(m.group(2))
                raise DistributedTrainingError(
                    f"{what}: {who} exited with status {code} ({cmds[i][2]}: "
                    f"{_tail(cmds[i][2])}); the other workers were stopped, the last checkpoint "
                    "is kept: run again with resume: true to continue from it"
                )
            if all(c == 0 for c in codes):
                return
            if time.monotonic() > deadline:
                _terminate(procs)
                raise DistributedTrainingError(f"{what}: not finished after {timeout:.0f} s")
            time.sleep(0.2)
    except BaseException:
        _terminate(procs)
        raise


def _worker_env(extra: dict) -> dict:
    env = {**os.environ, **extra, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return env


# --------------------------------------------------------------------------------------------
# Keras: MultiWorkerMirroredStrategy


def train_keras_multi_worker(
    manifest: pd.DataFrame,
    root: str,
    model_cfg: dict,
    stage_cfg: dict,
    seed: int,
    job_dir: str | Path,
    workers: int = 2,
    backbone_weights: list[np.ndarray] | None = None,
    centres: np.ndarray | None = None,
    timeout: float = 3600,
    env: dict | None = None,
    one_process: bool = False,
) -> tuple[list[np.ndarray], np.ndarray, list[dict]]:
    """``vlrface.training.keras.run_stage`` with ``strategy: multi_worker`` on ``workers`` local
    processes; returns the chief's ``(backbone weights, centres, history)``.

    ``one_process``: the reference instead, ``strategy: mirrored`` over ``workers`` logical CPU
    devices of one process (the same replicas and global batch, no TF_CONFIG)."""
    from vlrface.config.keras import ModelConfig, StageConfig

    job_dir = Path(job_dir)
    strategy = "mirrored" if one_process else "multi_worker"
    stage_cfg = {**stage_cfg, "strategy": strategy}
    StageConfig(**stage_cfg), ModelConfig(**model_cfg)  # a bad key fails here, not in N workers
    _write_job(job_dir, manifest, kind="keras", root=str(root), model=model_cfg,
               stage=stage_cfg, seed=seed)  # fmt: skip
    if backbone_weights is not None:
        np.savez(job_dir / "init.npz", *backbone_weights)
    if centres is not None:
        np.save(job_dir / "centres.npy", centres)
    (job_dir / KERAS_RESULT).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "vlrface.distributed", str(job_dir)]
    if one_process:
        e = _worker_env({**(env or {}), "VLRFACE_LOGICAL_CPUS": str(workers)})
        e.pop("TF_CONFIG", None)
        _run_workers([(cmd, e, job_dir / "reference.log")], "keras mirrored reference", timeout)
        return _read_keras_result(job_dir)
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(workers)]
    cmds = []
    for i in range(workers):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        e = _worker_env({**(env or {}), "TF_CONFIG": json.dumps(tf_config)})
        cmds.append((cmd, e, job_dir / f"worker-{i}.log"))
    _run_workers(cmds, f"keras multi_worker ({workers} workers)", timeout)
    return _read_keras_result(job_dir)


def _read_keras_result(job_dir: Path):
    with np.load(job_dir / KERAS_RESULT) as z:
        weights = [z[f"arr_{i}"] for i in range(len(z.files))]
    centres = np.load(job_dir / "result_centres.npy")
    history = json.loads((job_dir / "result.json").read_text())["history"]
    return weights, centres, history


def _keras_worker(job_dir: Path, job: dict, manifest: pd.DataFrame) -> None:
    logical = int(os.environ.get("VLRFACE_LOGICAL_CPUS", "0"))
    import tensorflow as tf

    if logical > 1:  # a one-process reference with the same replicas (tests)
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * logical
        )
    from vlrface import training
    from vlrface.config.keras import ModelConfig, StageConfig

    stage_cfg = StageConfig(**job["stage"])
    strategy = training.make_strategy(stage_cfg.strategy)  # before any other op (TF's rule)
    chief = training.is_chief(strategy)
    backbone = None
    if (job_dir / "init.npz").exists():
        from vlrface.models.keras import build_model

        backbone = build_model(ModelConfig(**job["model"]))
        with np.load(job_dir / "init.npz") as z:
            backbone.set_weights([z[f"arr_{i}"] for i in range(len(z.files))])
    centres = np.load(job_dir / "centres.npy") if (job_dir / "centres.npy").exists() else None
    die = _die_hook(0 if chief else 1)
    backbone, centres, history = training.run_stage(
        manifest,
        job["root"],
        ModelConfig(**job["model"]),
        stage_cfg,
        job["seed"],
        backbone=backbone,
        centres=centres,
        desc="multi_worker",
        progress=False,
        on_step=die,
    )
    weights = backbone.get_weights()  # every worker: reading synced variables is a collective
    if chief:
        np.savez(job_dir / ".result.npz", *weights)
        np.save(job_dir / "result_centres.npy", centres)
        (job_dir / "result.json").write_text(json.dumps({"history": history}))
        os.replace(job_dir / ".result.npz", job_dir / KERAS_RESULT)


def _die_hook(rank: int):
    """``VLRFACE_DIE_AT=<rank>:<step>``: that worker exits with 3 after that step (tests: a
    worker lost mid-epoch)."""
    spec = os.environ.get("VLRFACE_DIE_AT")
    if not spec:
        return None
    who, at = (int(v) for v in spec.split(":"))

    def hook(step, *_):
        if rank == who and step == at:
            os._exit(3)

    return hook


# --------------------------------------------------------------------------------------------
# PyTorch: DistributedDataParallel through torchrun


def train_torch_ddp(
    manifest: pd.DataFrame,
    root: str,
    model_cfg: dict,
    stage_cfg: dict,
    seed: int,
    job_dir: str | Path,
    processes: int = 2,
    image_size: int = 112,
    init: bytes | None = None,
    checkpoint_dir: str | Path | None = None,
    timeout: float = 3600,
    env: dict | None = None,
):
    """``vlrface.training.torch.train`` with ``ddp: true`` on ``processes`` local processes
    (``torchrun``, gloo); returns rank 0's ``(model, history, steps, resumed_from)``."""
    from vlrface import training_torch as tt
    from vlrface.config.torch import TorchModelConfig, TorchStageConfig

    job_dir = Path(job_dir)
    TorchStageConfig(**{**stage_cfg, "ddp": True}), TorchModelConfig(**model_cfg)  # fail here
    _write_job(job_dir, manifest, kind="torch", root=str(root), model=model_cfg,
               stage={**stage_cfg, "ddp": True}, seed=seed, image_size=image_size,
               checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None)  # fmt: skip
    if init is not None:
        (job_dir / "init.pt").write_bytes(init)
    (job_dir / TORCH_RESULT).unlink(missing_ok=True)
    (port,) = _free_ports(1)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nnodes=1", f"--nproc-per-node={processes}", "--max-restarts=0",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
           "-m", "vlrface.distributed", str(job_dir)]  # fmt: skip
    e = _worker_env({**(env or {}), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    _run_workers([(cmd, e, job_dir / "torchrun.log")], f"torch DDP ({processes} processes)",
                 timeout)  # fmt: skip
    result = json.loads((job_dir / "result.json").read_text())
    return (
        tt.load_model(job_dir / TORCH_RESULT),
        result["history"],
        result["steps"],
        result["resumed_from"],
    )


def _torch_worker(job_dir: Path, job: dict, manifest: pd.DataFrame) -> None:
    import torch.distributed as dist

    from vlrface import training_torch as tt
    from vlrface.config.torch import TorchModelConfig, TorchStageConfig

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        model_cfg = TorchModelConfig(**job["model"])
        tt.seed_everything(job["seed"])
        init = job_dir / "init.pt"
        net = tt.load_model(init.read_bytes()) if init.exists() else tt.make_model(model_cfg)
        die = _die_hook(rank)
        result = tt.train(
            net,
            manifest,
            job["root"],
            TorchStageConfig(**job["stage"]),
            job["seed"],
            image_size=job["image_size"],
            checkpoint_dir=job["checkpoint_dir"],
            on_step=die,
            desc=f"ddp rank {rank}",
        )
        if rank == 0:
            (job_dir / ".model.pt").write_bytes(tt.save_model(result.model, model_cfg))
            os.replace(job_dir / ".model.pt", job_dir / TORCH_RESULT)
            (job_dir / "result.json").write_text(
                json.dumps(
                    {
                        "history": result.history,
                        "steps": result.steps,
                        "resumed_from": result.resumed_from,
                    }
                )
            )
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    (job_dir,) = argv if argv is not None else sys.argv[1:]
    job_dir = Path(job_dir)
    job = json.loads((job_dir / "job.json").read_text())
    manifest = pd.read_parquet(job_dir / "manifest.parquet")
    {"keras": _keras_worker, "torch": _torch_worker}[job["kind"]](job_dir, job, manifest)


if __name__ == "__main__":
    main()
