"""PyTorch training for the torch backbones (``vlrface.models.torch``): margin heads, SGD with
decoupled weight decay, step/plateau schedules, degradation policies, teacher-student
distillation, exact resume from checkpoints and a NaN/Inf guard.

One step of ``train``:

1. the batch's rows come from a permutation that is a pure function of ``(seed, epoch)``; a row
   is decoded at the data's ``image_size`` (``preprocess.load_face``);
2. the degradation policy (``vlrface.degrade.policy_from_config``, the same functions as the
   Keras side) degrades the **student's** copy: per-sample policies draw from
   ``np.random.default_rng([seed, epoch, index])`` as ``vlrface.data.streaming`` does, a
   ``CrossResolutionPolicy`` marks its fixed share with ``apply_batch(..., seed, epoch,
   batch)``, and a ``CurriculumPolicy`` is asked for ``policy.at(global_step)``, so p rises
   0 -> 1 over the stage (Massoli et al.'s curriculum; docs/papers.md);
3. one horizontal flip draw (``default_rng([seed, epoch, index, 0xF1])``) applies to both
   copies; both go through the model's ``Preprocessing`` (geometry, normalisation, channel
   order) to NCHW;
4. loss = margin head cross-entropy on the student's descriptor, plus, with a teacher,
   ``feature_distillation_loss(teacher(HR), student(LR), lam)`` (Eq. 1; lam 0.1). The teacher
   is frozen: eval mode, ``requires_grad=False``, run under ``no_grad``, never in the optimiser.
   "nT-nC" (no teacher, no curriculum) is the same stage with ``teacher: null`` and a fixed
   policy;
5. SGD with momentum (or Adam: ``optimizer: adam``) and **decoupled** weight decay.
   ``torch.optim.SGD(weight_decay=wd)`` adds ``wd * p`` to the gradient, which then goes
   through the momentum buffer (L2 regularisation, coupled). Here SGD runs with
   ``weight_decay=0`` and every parameter is shrunk first,
   ``p <- p * (1 - lr * wd)`` with the step's scheduled ``lr`` (SGDW, Loshchilov & Hutter; the
   ``lr * wd`` scaling is PyTorch ``AdamW``'s). The decay never enters the momentum buffer. It
   applies to every trainable tensor (weights, biases, BN affine, head centres);
6. with ``grad_clip_norm`` the global gradient norm is clipped before the update;
7. the loss is checked before the backward pass and the parameters after the update; a NaN or
   Inf raises ``NonFiniteLossError`` naming the step, and the last good checkpoint is left as it is.

Checkpoints (``<checkpoint_dir>/last.pt``, written atomically every ``checkpoint_every`` steps
and at the end of every epoch) hold the model, head, optimiser (momentum buffers), schedule,
torch/numpy/python RNG states, the data position ``(epoch, batch)``, the running epoch loss and
the history. ``train`` resumes from one when it finds it, and the resumed run is bit-for-bit the
uninterrupted one (``tests/test_torch_training.py``). Determinism: ``seed_everything`` seeds
torch, numpy and ``random``; ``torch.use_deterministic_algorithms(True)`` is on while training.

Loader: a batch is a pure function of its rows, ``(seed, epoch, batch)`` and the step's
policy (``Batches.get``). ``loader_kind: thread`` decodes its rows in ``loader_workers`` threads
while the step waits; ``loader_kind: process`` computes the batches of the steps left ahead in
``loader_workers`` spawned processes through shared memory (``vlrface.data.loader.SlotWorkers``
running ``Batches.fill``, each DDP rank its own): the same tensors, bit for bit, so neither key
enters the checkpoint's fingerprint.

Device: ``device`` (``cpu`` default, ``cuda``, ``auto``) holds the student, head and teacher
during training; data are prepared on the CPU; the models come back on the CPU. On CUDA,
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` is set (if unset) for deterministic cuBLAS, and the CUDA RNG
state is checkpointed too.

DDP: with ``ddp: true`` and an initialised ``torch.distributed`` process group of more than one
process, the student and head are wrapped (as one module) in ``DistributedDataParallel`` and each
rank takes every ``world``-th row of the global batch; the logged loss/accuracy are the global
batch's (all-reduced); only rank 0 writes checkpoints, every rank resumes from them. In one process
the option changes nothing. ``vlrface.distributed.train_torch_ddp`` runs it on N processes
(torchrun, gloo); ``tests/test_distributed.py`` compares it with one process. A stage with
``ddp: true`` and ``processes: N > 1`` does that from ``run_stage`` (a pipeline's training step).
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from vlrface.config.common import HeadConfig
from vlrface.config.torch import TorchModelConfig, TorchStageConfig
from vlrface.data import records
from vlrface.degrade import CrossResolutionPolicy, CurriculumPolicy
from vlrface.errors import ConfigError
from vlrface.losses.heads import head_class
from vlrface.losses.torch.margins import laplacian_quality
from vlrface.losses.torch.pairs import feature_distillation_loss
from vlrface.models.torch import Preprocessing, build_torch
from vlrface.preprocess import load_face
from vlrface.training.common import (
    LRSchedule,
    NonFiniteLossError,
    build_policy,
    seed_python_numpy,
)

CHECKPOINT = "last.pt"
FORMAT = "vlrface.torch.v1"


# --------------------------------------------------------------------------------------------
# seeds, models, heads


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's global generator and ``random``."""
    torch.manual_seed(seed)
    seed_python_numpy(seed)


def make_model(cfg: TorchModelConfig) -> nn.Module:
    """A fresh backbone (no classifier) with ``model.preprocessing``; ``input_size`` replaces
    the model's geometry with a straight resize to that side."""
    model = build_torch(cfg.name, cfg.embedding)
    spec: Preprocessing = model.preprocessing
    if cfg.input_size and cfg.input_size != spec.input_size:
        if cfg.name.endswith("_gdc"):  # the GDC kernel is the feature map's side
            from vlrface.models.torch.squeezefaceposenet import DESCRIPTOR, SqueezeFacePoseNet

            model = SqueezeFacePoseNet(
                dwc="_dwc" in cfg.name,
                gdc=True,
                embedding=cfg.embedding or DESCRIPTOR,
                input_size=cfg.input_size,
            )
            model.name = cfg.name
        model.preprocessing = replace(
            spec, input_size=cfg.input_size, resize_shorter=None, center_crop=None
        )
    return model


def save_model(model: nn.Module, cfg: TorchModelConfig | None = None) -> bytes:
    """A self-describing checkpoint of a backbone: its config, preprocessing and weights."""
    model = getattr(model, "module", model)
    buf = io.BytesIO()
    torch.save(
        {
            "format": FORMAT,
            "model": cfg.model_dump(mode="json") if cfg is not None else None,
            "preprocessing": model.preprocessing.to_dict(),
            "state_dict": model.state_dict(),
        },
        buf,
    )
    return buf.getvalue()


def load_model(source: bytes | str | Path) -> nn.Module:
    """Rebuild a backbone from ``save_model`` bytes or a file holding them."""
    where = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
    if not isinstance(source, bytes | bytearray):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: torch checkpoint not found")
        source = path.read_bytes()
    try:  # weights_only: tensors and plain containers, never arbitrary pickled objects
        payload = torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"{where}: not a loadable vlrface torch checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a vlrface torch checkpoint (format {FORMAT} expected)")
    if payload["model"] is None:
        raise ConfigError(f"{where}: the checkpoint records no model config; cannot rebuild it")
    model = make_model(TorchModelConfig(**payload["model"]))
    model.preprocessing = Preprocessing.from_dict(payload["preprocessing"])
    model.load_state_dict(payload["state_dict"])
    return model


def to_portable(source: bytes) -> tuple[bytes, bytes]:
    """``save_model`` bytes as a registry stores them, without pickle: the weights as an
    ``.npz`` (numpy arrays only) and the config and preprocessing as JSON."""
    payload = torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
    buf = io.BytesIO()
    np.savez(buf, **{k: v.detach().cpu().numpy() for k, v in payload["state_dict"].items()})
    meta = {k: payload[k] for k in ("format", "model", "preprocessing")}
    return buf.getvalue(), json.dumps(meta, indent=2).encode()


def from_portable(weights: bytes | str | Path, meta: bytes | str | Path) -> nn.Module:
    """Rebuild a backbone from ``to_portable``'s ``.npz`` and JSON (bytes or files)."""
    where = "<bytes>" if isinstance(weights, bytes | bytearray) else str(weights)
    raw_w = bytes(weights) if isinstance(weights, bytes | bytearray) else Path(weights).read_bytes()
    raw_m = bytes(meta) if isinstance(meta, bytes | bytearray) else Path(meta).read_bytes()
    try:
        info = json.loads(raw_m)
        with np.load(io.BytesIO(raw_w), allow_pickle=False) as npz:
            state = {k: torch.from_numpy(npz[k].copy()) for k in npz.files}
    except (ValueError, OSError, KeyError) as exc:
        raise ConfigError(f"{where}: not a vlrface portable torch checkpoint ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or not info.get("model"):
        raise ConfigError(f"{where}: not a vlrface portable torch checkpoint")
    model = make_model(TorchModelConfig(**info["model"]))
    model.preprocessing = Preprocessing.from_dict(info["preprocessing"])
    model.load_state_dict(state)
    return model


def descriptor_dim(model: nn.Module) -> int:
    size = model.preprocessing.input_size
    training = model.training
    model.eval()
    with torch.no_grad():
        param = next(model.parameters(), None)
        x = torch.zeros(1, 3, size, size, device=None if param is None else param.device)
        dim = int(model(x).shape[1])
    model.train(training)
    return dim


def make_head(cfg: HeadConfig, dim: int, n_classes: int) -> nn.Module:
    """The loss head of ``cfg`` (a row of ``vlrface.losses.heads.LOSS_HEADS``, its torch class)."""
    return head_class(cfg.kind, "torch")(dim, n_classes, **cfg.params())


def freeze(teacher: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the teacher only extracts features."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


# --------------------------------------------------------------------------------------------
# optimiser and schedules


def decay_parameters(params, lr: float, weight_decay: float) -> None:
    """Decoupled weight decay: ``p <- p * (1 - lr * weight_decay)``, outside the gradient."""
    if weight_decay == 0:
        return
    with torch.no_grad():
        for p in params:
            p.mul_(1.0 - lr * weight_decay)


def make_optimizer(params, stage: TorchStageConfig) -> torch.optim.Optimizer:
    """The stage's optimizer without built-in decay (``decoupled_step`` decays): SGD with
    ``momentum``, or Adam with ``momentum`` as its beta_1 (with the decoupled decay: AdamW)."""
    if stage.optimizer == "adam":
        return torch.optim.Adam(params, lr=stage.lr, betas=(stage.momentum, 0.999))
    return torch.optim.SGD(params, lr=stage.lr, momentum=stage.momentum)


def decoupled_step(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Set ``lr`` on every group, decay decoupled, then take the (decay-free) step: SGDW with
    ``torch.optim.SGD``, AdamW with ``torch.optim.Adam``."""
    for group in optimizer.param_groups:
        if group["weight_decay"]:
            raise ValueError("decoupled decay needs the optimizer's weight_decay=0")
        group["lr"] = lr
        decay_parameters(group["params"], lr, weight_decay)
    optimizer.step()


# --------------------------------------------------------------------------------------------
# data


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The rows of ``epoch`` in order: a pure function of ``(seed, epoch)``."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def to_tensor(faces: np.ndarray, spec: Preprocessing, alloc=np.empty) -> torch.Tensor:
    """uint8 RGB NHWC faces -> the model's normalised NCHW batch in its channel order, written
    into ``alloc(shape, dtype)``'s array (a shared-memory slot in a process worker)."""
    x = spec.normalize(spec.geometry(faces))
    if spec.channel_order.upper() == "BGR":
        x = x[..., ::-1]
    out = alloc((x.shape[0], x.shape[3], x.shape[1], x.shape[2]), np.float32)
    out[...] = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(out)


class Batches:
    """Student and teacher batches of the training rows (see the module docstring)."""

    def __init__(
        self,
        root,
        manifest: pd.DataFrame,
        labels: dict[str, int],
        spec: Preprocessing,
        image_size: int,
        flip: bool,
        seed: int,
        workers: int = 0,
    ):
        self.root, self.spec, self.size, self.flip, self.seed = root, spec, image_size, flip, seed
        self.paths = manifest["path"].tolist()
        self.labels = manifest["identity"].map(labels).to_numpy(np.int64)
        if (self.labels < 0).any():
            raise ConfigError("training manifest: rows without a class label")
        self.pool = ThreadPoolExecutor(workers) if workers else None

    def __getstate__(self):  # to a process worker: it decodes in its own thread
        return {**self.__dict__, "pool": None}

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> np.ndarray:
        return load_face(self.root, self.paths[i], self.size)

    def get(self, idx: np.ndarray, epoch: int, batch: int, policy, teacher: bool, alloc=np.empty):
        """``(student, hr | None, labels)`` tensors of the rows ``idx``, their arrays taken from
        ``alloc(shape, dtype)`` in that order."""
        hr = list(self.pool.map(self._load, idx) if self.pool else map(self._load, idx))
        if policy is None:
            lr = hr
        elif isinstance(policy, CrossResolutionPolicy):
            lr, _ = policy.apply_batch(hr, self.seed, epoch, batch)
        else:
            lr = [
                policy.apply(img, np.random.default_rng([self.seed, epoch, int(i)]))[0]
                for img, i in zip(hr, idx, strict=True)
            ]
        if self.flip:
            flips = [
                np.random.default_rng([self.seed, epoch, int(i), 0xF1]).uniform() < 0.5 for i in idx
            ]
            hr = [img[:, ::-1] if f else img for img, f in zip(hr, flips, strict=True)]
            lr = [img[:, ::-1] if f else img for img, f in zip(lr, flips, strict=True)]
        student = to_tensor(np.stack(lr), self.spec, alloc)
        hr_batch = to_tensor(np.stack(hr), self.spec, alloc) if teacher else None
        labels = alloc(idx.shape, self.labels.dtype)
        np.take(self.labels, idx, out=labels)
        return student, hr_batch, torch.from_numpy(labels)

    def fill(self, idx: np.ndarray, epoch: int, batch: int, policy, teacher: bool, alloc) -> None:
        """``get``'s batch computed straight into ``alloc``'s arrays (a ``SlotWorkers`` job:
        shared memory): ``[epoch, batch]`` (int64), then ``get``'s student batch, HR batch (with
        a teacher) and labels, bit for bit."""
        alloc((2,), np.int64)[:] = (epoch, batch)
        self.get(idx, epoch, batch, policy, teacher, alloc)

    def nbytes(self, rows: int, teacher: bool) -> int:
        """The most bytes ``fill`` writes for ``rows`` rows (a shared-memory slot's size)."""
        side = self.spec.input_size
        image = rows * 3 * side * side * 4  # float32 NCHW
        return 16 + image * (2 if teacher else 1) + rows * 8 + 4 * 64  # 64-byte alignment


def _planned(stage: TorchStageConfig, n: int, seed: int, policy, teacher: bool, rank: int,
             world: int, step: int, epoch: int, batch: int, total: int):  # fmt: skip
    """``Batches.get``'s arguments for every step ``train`` has left from ``(step, epoch,
    batch)``, in order (its loop's arithmetic: the epoch's order, this rank's rows, the policy at
    the step the batch belongs to): what the loop trains on, and the process loader's jobs."""
    steps_per_epoch = n // stage.batch_size
    while epoch < stage.epochs and step < total:
        order = epoch_order(n, seed, epoch)
        for b in range(batch, steps_per_epoch):
            if step >= total:
                return
            idx = order[b * stage.batch_size : (b + 1) * stage.batch_size][rank::world]
            now = policy.at(step) if isinstance(policy, CurriculumPolicy) else policy
            yield idx, epoch, b, now, teacher
            step += 1
        epoch, batch = epoch + 1, 0


def _from_slots(stream, epoch: int, batch: int):
    """The next batch of a ``SlotWorkers`` stream of ``Batches.fill`` jobs, as ``get``'s
    ``(student, hr | None, labels)``; the stream must be at ``(epoch, batch)``. The tensors are
    views of the batch's shared-memory slot (``stream(copy=False)``): valid until the stream is
    asked for the next batch."""
    key, x, *rest = next(stream)
    hr, y = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0])
    if (int(key[0]), int(key[1])) != (epoch, batch):
        raise RuntimeError(
            f"process loader out of step: batch {tuple(key)} for (epoch, batch) {(epoch, batch)}"
        )
    return (
        torch.from_numpy(x),
        torch.from_numpy(hr) if hr is not None else None,
        torch.from_numpy(y),
    )


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (an error naming the key if there is none) or ``auto``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asked for, but torch sees no CUDA device")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainResult:
    model: nn.Module
    head: nn.Module
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    checkpoint: Path | None = None
    resumed_from: int | None = None


def _rank_world(ddp: bool) -> tuple[int, int]:
    import torch.distributed as dist

    if ddp and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Joint(nn.Module):
    """Backbone and head as one module, so that DDP all-reduces the head's gradients too."""

    def __init__(self, model: nn.Module, head: nn.Module):
        super().__init__()
        self.model, self.head = model, head
        spec = model.preprocessing
        std = spec.std if spec.channel_order.upper() == "RGB" else spec.std[::-1]
        device = next(model.parameters()).device
        std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.register_buffer("std", std, persistent=False)

    def quality(self, x):
        """The Laplacian quality of the normalised batch (``x * std`` are the pixels less the
        mean, which the Laplacian ignores) for a head that ``needs_quality``."""
        return laplacian_quality(x * self.std, self.head.statistic, pixel_scale=1.0)

    def forward(self, x, y):
        emb = self.model(x)
        if getattr(self.head, "needs_quality", False):
            return emb, self.head(emb, y, self.quality(x))
        return emb, self.head(emb, y)


def _global(values: list, n: int, world: int) -> list[float]:
    """Per-rank ``[mean loss, mean cls loss, hits, (mean distill)]`` -> the global batch's (means
    weighted by each rank's rows, hits summed)."""
    if world == 1:
        return [float(v) for v in values]
    import torch.distributed as dist

    t = torch.stack([v.float().reshape(()) * (n if i != 2 else 1) for i, v in enumerate(values)])
    t = torch.cat([t, torch.tensor([float(n)])])
    dist.all_reduce(t)
    rows = float(t[-1])
    return [float(t[i]) if i == 2 else float(t[i]) / rows for i in range(len(values))]


def data_hash(manifest: pd.DataFrame) -> str:
    """sha256 of the rows' paths and identities, in order."""
    import hashlib

    h = hashlib.sha256()
    for path, identity in zip(manifest["path"], manifest["identity"], strict=True):
        h.update(f"{path}\t{identity}\n".encode())
    return h.hexdigest()


def _fingerprint(stage: TorchStageConfig, seed: int, manifest: pd.DataFrame) -> dict:
    # how batches are loaded never changes them: not part of what a checkpoint must match
    skip = {"progress", "loader_workers", "loader_kind", "checkpoint_every", "checkpoint_dir"}
    if stage.processes == 1:  # as before the key existed: earlier checkpoints still resume
        skip.add("processes")
    if stage.optimizer == "sgd":  # likewise
        skip.add("optimizer")
    return {
        "stage": stage.model_dump(mode="json", exclude=skip),
        "seed": seed,
        "data": data_hash(manifest),
    }


def _numpy_state_to(state: tuple) -> dict:
    """numpy's legacy RNG state in types ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = state
    return {
        "name": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _numpy_state_from(d: dict) -> tuple:
    keys = d["keys"].numpy().astype(np.uint32)
    return (d["name"], keys, d["pos"], d["has_gauss"], d["cached"])


def _write_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    model: nn.Module,
    manifest: pd.DataFrame,
    root: str | Path,
    stage: TorchStageConfig,
    seed: int,
    *,
    image_size: int = 112,
    teacher: nn.Module | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` (a backbone with ``.preprocessing``) on ``manifest``'s rows (columns
    ``path``, ``identity``) under ``stage``; see the module docstring for every step.

    With ``checkpoint_dir`` holding a ``last.pt`` of the same stage, seed and data, training
    continues from it (``resume``); a checkpoint of another configuration is an error.
    ``on_step(step, record)`` runs after each step's checkpoint is written (an exception from
    it stops training as a kill would); ``on_epoch(epoch, record)`` after each epoch.
    """
    from vlrface.progress import tqdm

    if stage.teacher is not None and teacher is None:
        raise ConfigError("teacher: the stage has a teacher section but no teacher was given")
    labels = records.label_map(manifest)
    n_classes = len(labels)
    if n_classes < 2:
        raise ConfigError(f"training manifest: {n_classes} identity; need >= 2 classes")
    if len(manifest) < stage.batch_size:
        raise ConfigError(
            f"batch_size {stage.batch_size} exceeds the {len(manifest)} training images"
        )
    rank, world = _rank_world(stage.ddp)
    steps_per_epoch = len(manifest) // stage.batch_size
    total = stage.epochs * steps_per_epoch
    total = min(total, stage.max_steps) if stage.max_steps else total
    policy = build_policy(stage.degrade, total)
    spec = model.preprocessing
    threads = stage.loader_workers if stage.loader_kind == "thread" else 0
    batches = Batches(root, manifest, labels, spec, image_size, stage.flip, seed, workers=threads)
    slot_workers = stream = None  # loader_kind: process (started once the position is known)

    device = resolve_device(stage.device)
    if device.type == "cuda":  # cuBLAS needs a fixed workspace to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
        state = None
        if ckpt_path is not None and resume and ckpt_path.is_file():
            try:  # weights_only: no arbitrary pickled objects
                state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise ConfigError(
                    f"{ckpt_path}: not a loadable training checkpoint ({first})"
                ) from None
        if state is None:
            seed_everything(seed)
        model.to(device)
        dim = descriptor_dim(model)
        head = make_head(stage.head, dim, n_classes).to(device)
        if teacher is not None:
            freeze(teacher).to(device)
            if (tdim := descriptor_dim(teacher)) != dim:
                raise ConfigError(f"teacher: descriptor width {tdim} != the student's {dim}")
            if teacher.preprocessing.input_size != spec.input_size:
                raise ConfigError("teacher: its input size differs from the student's")
        params = [p for p in (*model.parameters(), *head.parameters()) if p.requires_grad]
        optimizer = make_optimizer(params, stage)
        schedule = LRSchedule.from_config(stage.schedule, stage.lr)
        sched_state = schedule.initial_state()
        fingerprint = _fingerprint(stage, seed, manifest)
        step, epoch, start_batch, history = 0, 0, 0, []
        loss_sum, correct, seen, parts = 0.0, 0, 0, {}
        resumed_from = None
        if state is not None:
            if state["fingerprint"] != fingerprint:
                raise ConfigError(
                    f"{ckpt_path}: checkpoint of another configuration (stage, seed or data "
                    "differ); remove it or use a new checkpoint_dir"
                )
            model.load_state_dict(state["model"])
            head.load_state_dict(state["head"])
            optimizer.load_state_dict(state["optimizer"])
            sched_state = state["schedule"]
            torch.set_rng_state(state["rng"]["torch"])
            if device.type == "cuda" and state["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
            np.random.set_state(_numpy_state_from(state["rng"]["numpy"]))
            random.setstate(state["rng"]["python"])
            step, epoch, start_batch = state["step"], state["epoch"], state["batch"]
            loss_sum, correct, seen = state["loss_sum"], state["correct"], state["seen"]
            parts = state["parts"]
            history = state["history"]
            resumed_from = step
        forward = _Joint(model, head)
        if world > 1:  # one DDP module over backbone and head: the head's gradients all-reduce too
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(forward)

        def checkpoint(epoch_: int, batch_: int) -> None:
            if ckpt_path is None or rank != 0:
                return
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(
                {
                    "fingerprint": fingerprint,
                    "model": model.state_dict(),
                    "head": head.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": sched_state,
                    "rng": {
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                        "numpy": _numpy_state_to(np.random.get_state()),
                        "python": random.getstate(),
                    },
                    "step": step,
                    "epoch": epoch_,
                    "batch": batch_,
                    "loss_sum": loss_sum,
                    "correct": correct,
                    "seen": seen,
                    "parts": parts,
                    "history": history,
                },
                ckpt_path,
            )

        def kept() -> str:
            if ckpt_path is not None and ckpt_path.is_file():
                return f"the last good checkpoint {ckpt_path} is kept"
            return "no checkpoint was written"

        def plan():  # ``Batches.get``'s arguments of every step left, in order
            return _planned(stage, len(manifest), seed, policy, teacher is not None, rank, world,
                            step, epoch, start_batch, total)  # fmt: skip

        steps_left = plan()
        if stage.loader_kind == "process":  # batches computed ahead in spawned processes
            from vlrface.data.loader import SlotWorkers

            slot_workers = SlotWorkers(batches, stage.loader_workers, method="fill")
            rows = -(-stage.batch_size // world)  # this rank's rows of a batch, at most
            # zero-copy hand-off: the batch's tensors are views of its slot, which a worker may
            # overwrite once the next batch is asked for. Safe in this loop: a turn is done with
            # its batch before the next turn asks (forward, backward and the step's figures are
            # synchronous, ``_global`` returns floats; ``.to("cpu")`` aliases, and a CUDA copy
            # from pageable memory has read the host buffer when it returns), and nothing keeps
            # ``x``, ``x_hr`` or ``y`` past the turn (autograd frees what it saved at backward)
            stream = slot_workers.stream(
                plan(), batches.nbytes(rows, teacher is not None), copy=False
            )
        model.train()
        head.train()
        bar = tqdm(total=total, initial=step, desc=desc, unit="step", disable=not stage.progress)
        while epoch < stage.epochs and step < total:
            for b in range(start_batch, steps_per_epoch):
                if step >= total:
                    break
                idx, _, _, now, _ = next(steps_left)  # this step's rows and policy
                if stream is None:
                    x, x_hr, y = batches.get(idx, epoch, b, now, teacher is not None)
                else:  # the same batch, computed ahead by a process worker
                    x, x_hr, y = _from_slots(stream, epoch, b)
                x, y = x.to(device), y.to(device)
                x_hr = x_hr.to(device) if x_hr is not None else None
                lr = schedule.lr_at(epoch, step, sched_state)
                emb, logits = forward(x, y)
                cls_loss = F.cross_entropy(logits, y)
                loss = cls_loss
                distill = None
                if teacher is not None:
                    with torch.no_grad():
                        target = teacher(x_hr)
                    distill = feature_distillation_loss(
                        target,
                        emb,
                        stage.teacher.lam,
                        stage.teacher.reduction,
                        stage.teacher.distance,
                    )
                    loss = stage.teacher.head_weight * cls_loss + distill
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"{desc}: loss is {loss.item()} at step {step + 1} (epoch {epoch + 1}); "
                        f"training stopped, {kept()}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if stage.grad_clip_norm is not None:
                    nn.utils.clip_grad_norm_(params, stage.grad_clip_norm)
                decoupled_step(optimizer, lr, stage.weight_decay)
                if not all(torch.isfinite(p).all() for p in params):
                    raise NonFiniteLossError(
                        f"{desc}: a parameter became NaN/Inf at step {step + 1} "
                        f"(epoch {epoch + 1}); training stopped, {kept()}"
                    )
                step += 1
                with torch.no_grad():  # the accuracy of the logits without the margin
                    plain = head.cosine(emb) if hasattr(head, "cosine") else logits
                    hits = (plain.argmax(1) == y).sum()
                figures = [loss.detach(), cls_loss.detach(), hits]
                if distill is not None:
                    figures.append(distill.detach())
                figures = _global(figures, len(y), world)  # the global batch's figures
                n = stage.batch_size if world > 1 else len(y)
                loss_sum += figures[0] * n
                correct += int(round(figures[2]))
                seen += n
                record = {"loss": figures[0], "cls_loss": figures[1]}
                if distill is not None:
                    record["distill_loss"] = figures[3]
                for k in ("cls_loss", "distill_loss"):
                    if k in record:
                        parts[k] = parts.get(k, 0.0) + record[k] * n
                record["lr"] = lr
                if isinstance(policy, CurriculumPolicy):
                    record["degrade_p"] = now.probability
                if step % stage.checkpoint_every == 0:
                    checkpoint(epoch, b + 1)
                # the postfix before the count: a logged line shows this step's figures
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                bar.update(1)
                if on_step is not None:
                    on_step(step, record)
            mean = loss_sum / max(seen, 1)
            acc = correct / max(seen, 1)
            lr = schedule.lr_for(epoch, sched_state)
            record = {"epoch": epoch + 1, "loss": mean, "acc": acc, "lr": lr}
            record.update({k: v / max(seen, 1) for k, v in parts.items()})
            sched_state = schedule.update(sched_state, mean)
            history.append(record)
            epoch, start_batch = epoch + 1, 0
            loss_sum, correct, seen, parts = 0.0, 0, 0, {}
            checkpoint(epoch, 0)
            if on_epoch is not None:
                on_epoch(epoch, record)
        bar.close()
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        if stream is not None:  # waits for the batches being written, unlinks every slot
            stream.close()
        if slot_workers is not None:
            slot_workers.close()
        if batches.pool is not None:
            batches.pool.shutdown()
    model.eval()
    model.to("cpu")
    head.to("cpu")
    if teacher is not None:
        teacher.to("cpu")
    return TrainResult(model, head, history, step, ckpt_path, resumed_from)


# --------------------------------------------------------------------------------------------
# one pipeline stage (the steps pretrain_torch / finetune_torch call this)


@dataclass
class StageRun:
    """What one stage produced, for the caller to record: the trained model as ``save_model``
    bytes, the per-epoch history, and the figures (``metrics``), ``tags`` and degradation
    ``policy`` (its ``policy_dict``, or None) to log under the stage's prefix."""

    model: bytes
    history: list
    metrics: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    policy: dict | None = None
    steps: int = 0


def variant(stage: TorchStageConfig) -> str:
    """The cross-resolution paper's names: T(eacher) / C(urriculum), n = without."""
    curriculum = bool(stage.degrade) and stage.degrade.get("kind") == "curriculum"
    return f"{'T' if stage.teacher else 'nT'}-{'C' if curriculum else 'nC'}"


def stage_rows(manifest: pd.DataFrame, stage: TorchStageConfig) -> pd.DataFrame:
    """The training split's rows of identities with >= ``min_images_per_identity`` images."""
    rows = manifest[manifest.split == "train"]
    counts = rows.identity.map(rows.identity.value_counts())
    return rows[counts >= stage.min_images_per_identity].reset_index(drop=True)


def checkpoint_dir(stage: TorchStageConfig, key: dict) -> Path:
    """``stage.checkpoint_dir``, else a temp folder keyed on everything the stage depends on
    (so a crashed run of the same stage resumes, and a different one never does)."""
    import tempfile

    from vlrface.provenance import config_hash

    if stage.checkpoint_dir:
        return Path(stage.checkpoint_dir)
    return Path(tempfile.gettempdir()) / "vlrface-torch-checkpoints" / config_hash(key)[:16]


def run_stage(
    prefix: str,
    manifest: pd.DataFrame,
    root: str,
    image_size: int,
    model_cfg: TorchModelConfig,
    stage: TorchStageConfig,
    seed: int,
    init: bytes | None = None,
    teacher: bytes | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> StageRun:
    """Train one stage on the training split: from ``init`` (``save_model`` bytes) or a new
    ``model_cfg`` model, with ``stage.teacher.checkpoint`` or ``teacher`` (bytes) as the frozen
    teacher when the stage has a ``teacher`` section. Resumes from the stage's checkpoint
    folder when a crashed run left one, and removes it when done."""
    import hashlib
    import shutil
    import time

    from vlrface.provenance import sha256_file

    rows = stage_rows(manifest, stage)
    run = StageRun(b"", [])
    run.metrics = {f"{prefix}.train_images": len(rows),
                   f"{prefix}.train_identities": rows.identity.nunique()}  # fmt: skip
    seed_everything(seed)
    net = load_model(init) if init is not None else make_model(model_cfg)
    teacher_net, teacher_sha = None, None
    if stage.teacher is not None:
        if stage.teacher.checkpoint:
            path = stage.teacher.checkpoint
            teacher_net, teacher_sha = load_model(path), sha256_file(path)
            run.tags[f"{prefix}.teacher.path"] = path
        elif teacher is not None:
            teacher_net, teacher_sha = load_model(teacher), hashlib.sha256(teacher).hexdigest()
        else:
            raise ConfigError(
                f"{prefix}.teacher: no teacher checkpoint and no pre-trained model to use as one"
            )
        run.tags[f"{prefix}.teacher.sha256"] = teacher_sha
    if stage.degrade is not None:
        total = stage.epochs * (len(rows) // stage.batch_size)
        total = min(total, stage.max_steps or total)
        run.policy = build_policy(stage.degrade, max(total, 1)).policy_dict()
    key = {
        "prefix": prefix,
        "stage": stage.model_dump(mode="json", exclude={"loader_kind"}),  # never changes a batch
        "seed": seed,
        "data": data_hash(rows),
        "init": hashlib.sha256(init).hexdigest() if init is not None else None,
        "teacher": teacher_sha,
    }
    ckpt = checkpoint_dir(stage, key)
    t0 = time.perf_counter()
    if stage.processes > 1:  # DDP on local processes, rank 0's result
        result = _train_ddp(prefix, rows, root, image_size, model_cfg, stage, seed, ckpt,
                            init if init is not None else save_model(net, model_cfg),
                            teacher_net, teacher, on_epoch)  # fmt: skip
    else:
        result = train(
            net, rows, root, stage, seed, image_size=image_size, teacher=teacher_net,
            checkpoint_dir=ckpt, on_epoch=on_epoch, desc=prefix,
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    images = (result.steps - (result.resumed_from or 0)) * stage.batch_size
    run.metrics[f"{prefix}.steps"] = result.steps
    run.metrics[f"{prefix}.images_per_s"] = images / max(seconds, 1e-9)
    if result.resumed_from is not None:
        run.tags[f"{prefix}.resumed_from_step"] = str(result.resumed_from)
    shutil.rmtree(ckpt, ignore_errors=True)  # finished: the crash-recovery state is spent
    run.model, run.history, run.steps = (
        save_model(result.model, model_cfg),
        result.history,
        result.steps,
    )
    return run


def _train_ddp(prefix, rows, root, image_size, model_cfg, stage, seed, ckpt, init, teacher_net,
               teacher, on_epoch) -> TrainResult:  # fmt: skip
    """``train`` with ``ddp: true`` on ``stage.processes`` local processes
    (``vlrface.distributed.train_torch_ddp``; the job folder is ``<ckpt>/job``): rank 0 alone
    writes ``<ckpt>/last.pt``, which a rerun after a lost process resumes from. ``on_epoch``
    receives rank 0's figures while it trains."""
    from vlrface.distributed import Replay, train_torch_ddp

    teacher_bytes = None
    if teacher_net is not None:
        path = stage.teacher.checkpoint
        teacher_bytes = Path(path).read_bytes() if path else teacher
    total = stage.epochs * (len(rows) // stage.batch_size)
    total = min(total, stage.max_steps) if stage.max_steps else total
    job = Path(ckpt) / "job"
    job.mkdir(parents=True, exist_ok=True)
    replay = Replay(job, f"{prefix} ({stage.processes} processes)", stage.progress,
                    on_epoch=on_epoch, total=total)  # fmt: skip
    try:
        model, history, steps, resumed = train_torch_ddp(
            rows, str(root), model_cfg.model_dump(mode="json"), stage.model_dump(mode="json"),
            seed, job, processes=stage.processes, image_size=image_size, init=init,
            checkpoint_dir=ckpt, timeout=float("inf"), teacher=teacher_bytes, desc=prefix,
            poll=replay,
        )  # fmt: skip
    finally:
        replay.close()
    return TrainResult(model, None, history, steps, Path(ckpt) / CHECKPOINT, resumed)


def load_pretrained(cfg: TorchModelConfig) -> bytes:
    """``cfg.pretrained`` (a ``save_model`` file) as ``save_model`` bytes; its input size must
    be the configured model's."""
    net = load_model(cfg.pretrained)
    if net.preprocessing.input_size != make_model(cfg).preprocessing.input_size:
        raise ConfigError(
            f"model.pretrained {cfg.pretrained}: input size {net.preprocessing.input_size} "
            "differs from model.input_size"
        )
    return save_model(net, cfg)


# --------------------------------------------------------------------------------------------
# evaluation adapter


class SpecEmbedder:
    """Adapts a torch-track embedder to the protocols' input convention.

    ``vlrface.protocols.verification.evaluate_pairs`` hands embedders BinaryFaceNet's
    normalisation (``(x - 127.5) / 128``, data ``image_size``); this undoes it to uint8 and
    applies the model's own ``Preprocessing`` (geometry and mean/std; the wrapped
    ``ONNXEmbedder``/``TorchEmbedder`` swaps the channels where the model wants BGR).
    """

    def __init__(self, inner, spec: Preprocessing):
        self.inner, self.spec = inner, spec

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raw = np.clip(np.rint(np.asarray(batch, np.float32) * 128.0 + 127.5), 0, 255)
        faces = self.spec.geometry(raw.astype(np.uint8))
        return self.inner(self.spec.normalize(faces))
