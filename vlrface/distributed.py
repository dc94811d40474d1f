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

The training stages reach these launchers through their configuration: a Keras stage with
``strategy: multi_worker`` and ``processes: N`` (``vlrface.training.keras.run_stage`` ->
``run_keras_stage``), a PyTorch stage with ``ddp: true`` and ``processes: N``
(``vlrface.training.torch.run_stage``). While the workers train, the chief appends what the
single-process stage would report (the run's settings, each epoch's figures, the step reached)
to ``events.jsonl`` in the job directory; the launcher replays them to the caller's callbacks
(MLflow) and progress bar as they come.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vlrface.errors import VlrfaceError
from vlrface.team import stop_groups

KERAS_RESULT, TORCH_RESULT = "backbone.npz", "model.pt"
EVENTS = "events.jsonl"  # the chief's progress, one JSON object a line


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


def _tail(path: Path, n: int = 600) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return " | ".join(text[-n:].strip().splitlines()[-4:])


def _run_workers(
    cmds: list[tuple[list[str], dict, Path]], what: str, timeout: float, poll=None
) -> None:
    """Start ``cmds`` (command, environment, log), wait for all; ``poll()`` runs every 0.2 s
    while they do and once when they have all finished."""
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
                stop_groups(procs, timeout=20)
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
            if poll is not None:
                poll()
            if all(c == 0 for c in codes):
                return
            if time.monotonic() > deadline:
                stop_groups(procs, timeout=20)
                raise DistributedTrainingError(f"{what}: not finished after {timeout:.0f} s")
            time.sleep(0.2)
    except BaseException:
        stop_groups(procs, timeout=20)
        raise


def _worker_env(extra: dict) -> dict:
    env = {**os.environ, **extra, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return env


class _Emitter:
    """The chief's side of ``events.jsonl``: ``start`` (the run's settings), ``epoch`` (its
    figures) and ``step`` (the global step reached; at most one every ``every`` seconds)."""

    def __init__(self, job_dir: Path, every: float = 2.0):
        self.path, self.every, self.last = job_dir / EVENTS, every, 0.0

    def __call__(self, kind: str, **event) -> None:
        line = json.dumps({"kind": kind, **event}, default=_plain) + "\n"
        with open(self.path, "a") as out:  # one short write a line: never read half
            out.write(line)

    def step(self, step: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self("step", step=int(step))


def _plain(value):
    """JSON for what the settings hold beyond JSON's types (numpy scalars, tuples' items)."""
    return value.item() if hasattr(value, "item") else str(value)


class Replay:
    """The launcher's side of ``events.jsonl``: complete lines only, each once, to the callbacks
    a single-process stage would call (``on_start(info)``, ``on_epoch(epoch, record)``) and to
    a progress bar over the stage's steps (``total``, or the ``start`` event's
    ``total_steps``)."""

    def __init__(self, job_dir, desc: str, progress: bool = True, on_start=None, on_epoch=None,
                 total: int | None = None):  # fmt: skip
        self.path, self.offset = Path(job_dir) / EVENTS, 0
        self.desc, self.progress, self.total = desc, progress, total
        self.on_start, self.on_epoch, self.bar = on_start, on_epoch, None
        self.path.unlink(missing_ok=True)  # a rerun's job: only this run's events

    def __call__(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode().splitlines():
            event = json.loads(line)
            kind = event.pop("kind")
            if kind == "start":
                self.total = self.total or event["info"].get("total_steps")
                if self.on_start is not None:
                    self.on_start(event["info"])
            elif kind == "epoch" and self.on_epoch is not None:
                self.on_epoch(event["epoch"], event["record"])
            elif kind == "step":
                self._bar(event["step"])

    def _bar(self, step: int) -> None:
        from vlrface.progress import tqdm

        if self.bar is None:
            self.bar = tqdm(total=self.total, desc=self.desc, unit="step",
                            disable=not self.progress)  # fmt: skip
        self.bar.update(max(step - self.bar.n, 0))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
    backbone_file: str | Path | None = None,
    teacher_file: str | Path | None = None,
    desc: str = "multi_worker",
    poll=None,
) -> tuple[list[np.ndarray], np.ndarray, list[dict]]:
    """``vlrface.training.keras.run_stage`` with ``strategy: multi_worker`` on ``workers`` local
    processes; returns the chief's ``(backbone weights, centres, history)``.

    The starting backbone: ``backbone_file`` (a ``.keras`` file, any architecture) or
    ``backbone_weights`` (for a ``model_cfg`` model), else a new ``model_cfg`` model;
    ``teacher_file``: a ``.keras`` teacher overriding ``stage_cfg.teacher``. ``desc`` names the
    stage (in its checkpoints' fingerprint, as in one process); ``poll()`` (e.g. a ``Replay``)
    runs while the workers train. ``one_process``: the reference instead, ``strategy:
    mirrored`` over ``workers`` logical CPU devices of one process (the same replicas and global
    batch, no TF_CONFIG)."""
    from vlrface.config.keras import ModelConfig, StageConfig

    job_dir = Path(job_dir)
    strategy = "mirrored" if one_process else "multi_worker"
    stage_cfg = {**stage_cfg, "strategy": strategy, "processes": 1 if one_process else workers}
    StageConfig(**stage_cfg), ModelConfig(**model_cfg)  # a bad key fails here, not in N workers
    _write_job(job_dir, manifest, kind="keras", root=str(root), model=model_cfg,
               stage=stage_cfg, seed=seed, desc=desc)  # fmt: skip
    for name, given in (("init.keras", backbone_file), ("teacher.keras", teacher_file)):
        if given is not None and Path(given).resolve() != (job_dir / name).resolve():
            shutil.copyfile(given, job_dir / name)
        elif given is None:
            (job_dir / name).unlink(missing_ok=True)
    (job_dir / "init.npz").unlink(missing_ok=True)
    if backbone_weights is not None:
        np.savez(job_dir / "init.npz", *backbone_weights)
    (job_dir / "centres.npy").unlink(missing_ok=True)
    if centres is not None:
        np.save(job_dir / "centres.npy", centres)
    (job_dir / KERAS_RESULT).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "vlrface.distributed", str(job_dir)]
    if one_process:
        e = _worker_env({**(env or {}), "VLRFACE_LOGICAL_CPUS": str(workers)})
        e.pop("TF_CONFIG", None)
        _run_workers([(cmd, e, job_dir / "reference.log")], "keras mirrored reference", timeout,
                     poll)  # fmt: skip
        return _read_keras_result(job_dir)
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(workers)]
    cmds = []
    for i in range(workers):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        e = _worker_env({**(env or {}), "TF_CONFIG": json.dumps(tf_config)})
        cmds.append((cmd, e, job_dir / f"worker-{i}.log"))
    _run_workers(cmds, f"keras multi_worker ({workers} workers)", timeout, poll)
    return _read_keras_result(job_dir)


def run_keras_stage(
    manifest: pd.DataFrame,
    root: str,
    model_cfg,
    stage_cfg,
    seed: int,
    backbone=None,
    centres: np.ndarray | None = None,
    desc: str = "train",
    on_epoch=None,
    progress: bool = True,
    on_start=None,
    teacher=None,
):
    """``vlrface.training.keras.run_stage`` for a stage with ``strategy: multi_worker`` and
    ``processes: N > 1``: N local workers (``train_keras_multi_worker``); returns ``(backbone,
    centres, history)`` as one process does, the backbone holding the chief's weights.

    The job directory is ``<checkpoint_dir>/job`` (kept, with the workers' logs), else a temp
    folder removed when the stage succeeds. ``on_start``/``on_epoch`` receive the chief's
    settings and figures while it trains; checkpoints are the chief's, so ``resume: true``
    continues a stage whose worker died."""
    import tempfile

    from vlrface._keras import load_keras, save_keras
    from vlrface.models.keras import build_model
    from vlrface.training.keras import freeze_batch_norm, freeze_layers

    if stage_cfg.checkpoint_dir:
        job_dir, temp = Path(stage_cfg.checkpoint_dir) / "job", False
        job_dir.mkdir(parents=True, exist_ok=True)
    else:
        job_dir, temp = Path(tempfile.mkdtemp(prefix="vlrface-multi-worker-")), True
    init = job_dir / "init.keras" if backbone is not None else None
    teacher_file = job_dir / "teacher.keras" if teacher is not None else None
    if init is not None:
        save_keras(backbone, str(init))
    if teacher_file is not None:
        save_keras(teacher, str(teacher_file))
    replay = Replay(job_dir, f"{desc} ({stage_cfg.processes} workers)", progress, on_start,
                    on_epoch)  # fmt: skip
    try:
        weights, centres, history = train_keras_multi_worker(
            manifest, root, model_cfg.model_dump(mode="json"), stage_cfg.model_dump(mode="json"),
            seed, job_dir, workers=stage_cfg.processes, centres=centres, timeout=float("inf"),
            backbone_file=init, teacher_file=teacher_file, desc=desc, poll=replay,
        )  # fmt: skip
    finally:
        replay.close()
    result = load_keras(str(init)) if init is not None else build_model(model_cfg)
    result.set_weights(weights)
    if stage_cfg.freeze_bn:  # as the single-process stage returns it
        freeze_batch_norm(result)
    if stage_cfg.freeze is not None:
        freeze_layers(result, stage_cfg.freeze)
    if temp:
        shutil.rmtree(job_dir, ignore_errors=True)
    return result, centres, history


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
    from vlrface._keras import load_keras
    from vlrface.config.keras import ModelConfig, StageConfig
    from vlrface.training import keras as training

    stage_cfg = StageConfig(**job["stage"])
    strategy = training.make_strategy(stage_cfg.strategy)  # before any other op (TF's rule)
    chief = training.is_chief(strategy)
    backbone = teacher = None
    if (job_dir / "init.keras").exists():
        backbone = load_keras(str(job_dir / "init.keras"))
    elif (job_dir / "init.npz").exists():
        from vlrface.models.keras import build_model

        backbone = build_model(ModelConfig(**job["model"]))
        with np.load(job_dir / "init.npz") as z:
            backbone.set_weights([z[f"arr_{i}"] for i in range(len(z.files))])
    if (job_dir / "teacher.keras").exists():
        teacher = load_keras(str(job_dir / "teacher.keras"))
    centres = np.load(job_dir / "centres.npy") if (job_dir / "centres.npy").exists() else None
    emit, on_step = _worker_hooks(job_dir, 0 if chief else 1)
    backbone, centres, history = training.run_stage(
        manifest,
        job["root"],
        ModelConfig(**job["model"]),
        stage_cfg,
        job["seed"],
        backbone=backbone,
        centres=centres,
        desc=job.get("desc", "multi_worker"),
        progress=False,
        on_step=on_step,
        on_start=(lambda info: emit("start", info=info)) if emit else None,
        on_epoch=(lambda e, r: emit("epoch", epoch=e, record=r)) if emit else None,
        teacher=teacher,
        in_this_process=True,
    )
    weights = backbone.get_weights()  # every worker: reading synced variables is a collective
    if chief:
        np.savez(job_dir / ".result.npz", *weights)
        np.save(job_dir / "result_centres.npy", centres)
        (job_dir / "result.json").write_text(json.dumps({"history": history}))
        os.replace(job_dir / ".result.npz", job_dir / KERAS_RESULT)


def _worker_hooks(job_dir: Path, rank: int):
    """A worker's ``(emit, on_step)``: ``emit`` writes the chief's (rank 0's) events, None on
    the other workers; ``on_step(step, ...)`` reports the step reached (chief) and runs
    ``_die_hook``."""
    die = _die_hook(rank)
    emit = _Emitter(job_dir) if rank == 0 else None

    def on_step(step, *rest):
        if emit is not None:
            emit.step(step)
        if die is not None:
            die(step, *rest)

    return emit, on_step


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
    teacher: bytes | None = None,
    desc: str = "ddp",
    poll=None,
):
    """``vlrface.training.torch.train`` with ``ddp: true`` on ``processes`` local processes
    (``torchrun``, gloo); returns rank 0's ``(model, history, steps, resumed_from)``.

    ``init``/``teacher``: ``save_model`` bytes of the starting model / the frozen teacher;
    ``poll()`` (e.g. a ``Replay``) runs while the processes train."""
    from vlrface.config.torch import TorchModelConfig, TorchStageConfig
    from vlrface.training import torch as tt

    job_dir = Path(job_dir)
    TorchStageConfig(**{**stage_cfg, "ddp": True}), TorchModelConfig(**model_cfg)  # fail here
    _write_job(job_dir, manifest, kind="torch", root=str(root), model=model_cfg,
               stage={**stage_cfg, "ddp": True}, seed=seed, image_size=image_size,
               checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
               desc=desc)  # fmt: skip
    for name, given in (("init.pt", init), ("teacher.pt", teacher)):
        (job_dir / name).unlink(missing_ok=True)
        if given is not None:
            (job_dir / name).write_bytes(given)
    (job_dir / TORCH_RESULT).unlink(missing_ok=True)
    (port,) = _free_ports(1)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nnodes=1", f"--nproc-per-node={processes}", "--max-restarts=0",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
           "-m", "vlrface.distributed", str(job_dir)]  # fmt: skip
    e = _worker_env({**(env or {}), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    _run_workers([(cmd, e, job_dir / "torchrun.log")], f"torch DDP ({processes} processes)",
                 timeout, poll)  # fmt: skip
    result = json.loads((job_dir / "result.json").read_text())
    return (
        tt.load_model(job_dir / TORCH_RESULT),
        result["history"],
        result["steps"],
        result["resumed_from"],
    )


def _torch_worker(job_dir: Path, job: dict, manifest: pd.DataFrame) -> None:
    import torch.distributed as dist

    from vlrface.config.torch import TorchModelConfig, TorchStageConfig
    from vlrface.training import torch as tt

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        model_cfg = TorchModelConfig(**job["model"])
        tt.seed_everything(job["seed"])
        init, teacher = job_dir / "init.pt", job_dir / "teacher.pt"
        net = tt.load_model(init.read_bytes()) if init.exists() else tt.make_model(model_cfg)
        emit, on_step = _worker_hooks(job_dir, rank)
        result = tt.train(
            net,
            manifest,
            job["root"],
            TorchStageConfig(**job["stage"]),
            job["seed"],
            image_size=job["image_size"],
            teacher=tt.load_model(teacher.read_bytes()) if teacher.exists() else None,
            checkpoint_dir=job["checkpoint_dir"],
            on_step=on_step,
            on_epoch=(lambda e, r: emit("epoch", epoch=e, record=r)) if emit else None,
            desc=f"{job.get('desc', 'ddp')} rank {rank}",
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
