"""Training a Keras face backbone with a margin head: SGDW, schedules, checkpoints, T-C.

BinaryFaceNet (paper Sec. 3.2; docs/papers.md): SGD with momentum 0.9 and decoupled weight decay
5e-4 (SGDW), lr 0.01 multiplied by 0.1 at epochs 9, 15 and 18, ArcFace with s = 16. The loop is a
plain ``tf.GradientTape`` step so that seeds, progress and per-epoch logging are explicit; with
``tf.config.experimental.enable_op_determinism`` two runs with the same seed give the same
weights bit for bit on a CPU.

* Optimizer: SGD with momentum (the paper's), or Adam (``optimizer: adam``; ``momentum`` is its
  beta_1), the optimizer binary networks are usually trained with (larq zoo's QuickNet).
* Weight decay: tf-keras' ``SGD(weight_decay=wd)`` (and ``Adam``'s: AdamW) applies
  ``w -= lr * wd * w`` to every trainable variable before the momentum update, outside the
  gradient: decoupled (Loshchilov & Hutter's SGDW), not an L2 term (the decay never enters the
  momentum buffer), and scaled by the current lr, so it follows the schedule.
  ``tests/test_training.py`` checks this.
* Schedules: ``vlrface.training.common.LRSchedule`` (the paper's steps, or reduce when the
  epoch's mean training loss stops improving, as the cross-resolution papers do: Massoli et
  al. Sec. 5).
* Losses: any head of ``vlrface.losses.heads.LOSS_HEADS`` (its Keras class); the softmax
  cross-entropy of its logits, plus ``lam * MSE(teacher(HR), student(LR))`` with a frozen
  teacher (T-C). ``train_acc`` is measured on the logits without the margin.
* Embeddings of the training faces computed once per stage (``embedding_table``, optionally
  kept on disk under ``embedding_cache``, keyed by the model's weights and the faces): the frozen
  teacher's (``teacher.cache``: as is and mirrored, so the step reads the teacher's output
  instead of running it) and the starting backbone's class means as the new margin head's
  centres (``head_init: class_means``: a warm start that does not disturb a pre-trained backbone
  with a random head).
* Checkpoints every N steps (``Checkpointer``): backbone, head and optimizer variables, lr and
  schedule state, epoch/step counters (the data position: batches are pure functions of
  ``(seed, epoch, step)``, the only random draws of a step) and the partial epoch's figures;
  ``resume`` continues bit for bit. A non-finite loss or gradient norm stops training with
  ``NonFiniteLossError`` naming the step; the last good checkpoint is kept as it was.
* ``ema: d``: the backbone ends as the exponential moving average of its weights over the stage
  (``WeightAverage``; the averages are checkpointed, so a resume averages exactly).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlrface._keras import tf
from vlrface.data.loader import FaceBatches
from vlrface.errors import ConfigError
from vlrface.logs import first_call_filtered
from vlrface.losses.heads import LOSS_HEADS, LOSSES, head_class
from vlrface.losses.keras import arcface_loss, feature_distillation_loss, laplacian_quality
from vlrface.progress import tqdm
from vlrface.training.common import (
    LRSchedule,
    NonFiniteLossError,
    build_policy,
    seed_python_numpy,
)

log = logging.getLogger(__name__)

__all__ = ["LOSSES", "NonFiniteLossError", "Stage", "run_stage", "train"]


class CheckpointMismatchError(RuntimeError):
    """A checkpoint that does not belong to this stage (other data, batch size or model)."""


@dataclass(frozen=True)
class Optimizer:
    momentum: float = 0.9  # SGD's momentum, or Adam's beta_1
    weight_decay: float = 5e-4  # decoupled: SGDW / AdamW
    name: str = "sgd"  # "sgd" or "adam"

    def build(self, learning_rate):
        """The tf-keras optimizer: SGD with momentum, or Adam, both with decoupled decay."""
        if self.name == "adam":
            return tf.keras.optimizers.Adam(
                learning_rate=learning_rate,
                beta_1=self.momentum,
                weight_decay=self.weight_decay,
            )
        if self.name != "sgd":
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.name!r}")
        return tf.keras.optimizers.SGD(
            learning_rate=learning_rate,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            # Keras' default XLA-compiled update, as the trainer always had: the same numerics
        )

    def describe(self) -> dict:
        return {
            "name": "AdamW" if self.name == "adam" else "SGDW",
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "decoupled_weight_decay": True,
        }


@dataclass(frozen=True)
class Stage:
    """One training stage (pre-training or a fine-tune)."""

    epochs: int
    batch_size: int = 128
    schedule: LRSchedule = field(
        default_factory=lambda: LRSchedule("step", 0.01, milestones=(9, 15, 18))
    )
    optimizer: Optimizer = field(default_factory=Optimizer)
    loss: str = "arcface"  # a row of vlrface.losses.heads.LOSS_HEADS
    head_params: dict = field(default_factory=dict)  # that head's keyword arguments
    distill_lambda: float = 0.1
    distill_reduction: str = "mean"
    distill_distance: str = "mse"
    distill_head_weight: float = 1.0  # the margin loss's weight beside the distillation term
    checkpoint_every: int | None = None
    checkpoint_dir: str | None = None
    keep_checkpoints: int = 2
    resume: bool = False
    strategy: str = "default"
    mixed_precision: bool = False
    freeze_bn: bool = False
    freeze: str | None = None
    ema: float | None = None  # the backbone's weights end as their moving average (this decay)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (Keras' initialisers too), and make TF's kernels
    deterministic."""
    seed_python_numpy(seed)
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def make_head(n_classes: int, embedding: int, stage: Stage, centres: np.ndarray | None = None):
    """The stage's loss head (``vlrface.losses.heads``), its centres initialised from
    ``centres`` when their shape fits."""
    if stage.loss not in LOSS_HEADS:
        raise ConfigError(f"unknown loss {stage.loss!r}; choose one of {list(LOSSES)}")
    head = head_class(stage.loss, "keras")(n_classes, **stage.head_params)
    head.build((None, embedding))
    if centres is not None and centres.shape == (embedding, n_classes):
        head.centres.assign(centres)
    return head


def head_settings(head, kind: str) -> dict:
    """The parameters of a ``kind`` head as built (its defaults included), for the run's record."""
    config = head.get_config()
    return {k: config[k] for k in LOSS_HEADS[kind].params if k in config}


def _logits(head, emb, y, x):
    """The head's training logits; a head that ``needs_quality`` gets the images' Laplacian
    quality (``head.statistic``)."""
    if getattr(head, "needs_quality", False):
        return head(emb, y, laplacian_quality(x, head.statistic), training=True)
    return head(emb, y, training=True)


def _plain(head, emb, logits):
    """The logits without a margin, which the training accuracy is measured on: a margin head's
    cosines (its margin logits handicap the true class), a plain softmax head's own logits."""
    return head.cosine(emb) if hasattr(head, "cosine") else logits


_MULTI_WORKER = None  # one per process: its collectives are configured once, at creation


def make_strategy(name: str):
    """``tf.distribute`` strategy by name; ``default`` is the no-op default strategy.

    ``mirrored`` spans the GPUs, else every logical CPU device when there are several
    (``tf.config.set_logical_device_configuration``), else the CPU. ``multi_worker`` reads the
    cluster from ``TF_CONFIG`` (``vlrface.distributed.train_keras_multi_worker`` sets it)."""
    global _MULTI_WORKER
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        cpus = tf.config.list_logical_devices("CPU")
        if not tf.config.list_logical_devices("GPU") and len(cpus) > 1:
            return tf.distribute.MirroredStrategy([d.name for d in cpus])
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if _MULTI_WORKER is None:
            _MULTI_WORKER = tf.distribute.MultiWorkerMirroredStrategy()
        return _MULTI_WORKER
    raise ConfigError(f"unknown strategy {name!r}; choose default, mirrored or multi_worker")


def is_chief(strategy) -> bool:
    """Whether this process writes checkpoints: always, unless it is a multi-worker replica
    other than worker 0 (or the ``chief`` task)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    return (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and ("chief" not in resolver.cluster_spec().as_dict())
    )


def mixed_precision_applies(requested: bool) -> bool:
    """Mixed precision runs on a GPU only; on a CPU the request is logged and ignored."""
    if not requested:
        return False
    if tf.config.list_physical_devices("GPU"):
        return True
    log.warning("mixed_precision: true is ignored: no GPU here (float32 on the CPU)")
    return False


# --------------------------------------------------------------------------------------------
# checkpoints


# fingerprint keys added after checkpoints were first written: their value in those checkpoints
_FINGERPRINT_BEFORE = {"optimizer": "sgd"}


class Checkpointer:
    """``<dir>/ckpt-<global step>/{variables.npz, state.json}`` plus ``<dir>/latest``.

    ``variables.npz`` holds every backbone, head and optimizer variable (moving averages, slot
    variables and the optimizer's iteration counter included) under ``<group>/<index>``, with
    their names in ``state.json`` so that a restore checks it fills the same variables. A
    checkpoint directory is written under a temporary name and renamed, and ``latest`` replaced
    atomically after it, so an interrupted save leaves the previous checkpoint in charge.
    """

    def __init__(self, directory: str | Path, keep: int = 2):
        self.dir, self.keep = Path(directory), keep

    def latest(self) -> Path | None:
        pointer = self.dir / "latest"
        if not pointer.is_file():
            return None
        path = self.dir / pointer.read_text().strip()
        if not (path / "state.json").is_file():
            raise CheckpointMismatchError(f"{pointer}: names {path.name}, which is incomplete")
        return path

    def save(self, groups: dict[str, list], state: dict) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{state['global_step']:09d}"
        tmp = self.dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        arrays, names = {}, {}
        for group, variables in groups.items():
            names[group] = [v.name for v in variables]
            for i, v in enumerate(variables):
                arrays[f"{group}/{i}"] = v.numpy()
        np.savez(tmp / "variables.npz", **arrays)
        (tmp / "state.json").write_text(json.dumps({**state, "variables": names}, indent=1))
        final = self.dir / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer = self.dir / ".latest.tmp"
        pointer.write_text(name)
        os.replace(pointer, self.dir / "latest")
        self._prune(final)
        return final

    def _prune(self, current: Path) -> None:
        mine = sorted(p for p in self.dir.glob("ckpt-*") if p.is_dir())
        for old in [p for p in mine if p != current][: max(len(mine) - self.keep, 0)]:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def state(path: Path) -> dict:
        """The checkpoint's ``state.json``."""
        return json.loads((path / "state.json").read_text())

    @staticmethod
    def restore(path: Path, groups: dict[str, list], state: dict) -> None:
        """Assign the checkpoint's variables (``state``: its ``state.json``) to ``groups``."""
        with np.load(path / "variables.npz") as arrays:
            for group, variables in groups.items():
                saved = state["variables"].get(group, [])
                if len(saved) != len(variables):
                    raise CheckpointMismatchError(
                        f"{path}: {len(saved)} '{group}' variables saved, the run has "
                        f"{len(variables)}"
                    )
                for i, v in enumerate(variables):
                    value = arrays[f"{group}/{i}"]
                    if tuple(value.shape) != tuple(v.shape):
                        raise CheckpointMismatchError(
                            f"{path}: '{group}' variable {i} ({saved[i]}) has shape "
                            f"{value.shape}, the run's {v.name} {tuple(v.shape)}"
                        )
                    v.assign(value)


# --------------------------------------------------------------------------------------------
# the loop


def build_step(
    backbone,
    head,
    stage: Stage,
    initial_lr: float,
    teacher=None,
    strategy=None,
    mixed_precision=False,
    teacher_cached=False,
):
    """``(step, optimizer, lr variable)``: the compiled training step ``step(x, y, x_hr) ->
    (loss, hits, gradient norm)`` (SGDW or AdamW; ``x_hr`` is read only with a teacher; with
    ``teacher_cached`` it is already the teacher's embedding of the HR faces)."""
    strategy = strategy or tf.distribute.get_strategy()
    distributed = strategy is not tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        opt = stage.optimizer.build(initial_lr)
        if mixed_precision:
            opt = tf.keras.mixed_precision.LossScaleOptimizer(opt)
        variables = backbone.trainable_variables + head.trainable_variables
        inner = opt.inner_optimizer if mixed_precision else opt
        inner.build(variables)
        # the optimizer's own rate variable: tf-keras' SGD copies a ``tf.Variable`` given as
        # ``learning_rate`` into one of its own, so assigning the given one would change nothing
        # (the schedule and its warm-up would be logged and never applied)
        lr = inner.learning_rate
    if teacher is not None and teacher.trainable_variables:
        raise ValueError("the teacher must be frozen (teacher.trainable = False)")

    def replica_step(x, y, x_hr):
        with tf.GradientTape() as tape:
            emb = backbone(x, training=True)
            logits = _logits(head, emb, y, x)
            loss = arcface_loss(logits, y)
            if teacher is not None:
                if stage.distill_head_weight != 1.0:
                    loss = stage.distill_head_weight * loss
                loss = loss + feature_distillation_loss(
                    x_hr if teacher_cached else teacher(x_hr, training=False),
                    emb,
                    stage.distill_lambda,
                    stage.distill_reduction,
                    stage.distill_distance,
                )
            scaled = loss / replicas
            if mixed_precision:
                scaled = opt.get_scaled_loss(scaled)
        grads = tape.gradient(scaled, variables)
        if mixed_precision:
            grads = opt.get_unscaled_gradients(grads)
        gnorm = tf.linalg.global_norm(grads)
        opt.apply_gradients(zip(grads, variables, strict=True))
        plain = _plain(head, emb, logits)
        hits = tf.reduce_sum(tf.cast(tf.argmax(plain, 1, output_type=tf.int32) == y, tf.int32))
        return loss, hits, gnorm

    @tf.function(reduce_retracing=True)
    def step(x, y, x_hr):
        if not distributed and replicas == 1:
            return replica_step(x, y, x_hr)
        loss, hits, gnorm = strategy.run(replica_step, args=(x, y, x_hr))
        mean = tf.distribute.ReduceOp.MEAN
        return (
            strategy.reduce(mean, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None),
            # finite iff every replica's is: the guard's use (not the all-reduced norm)
            strategy.reduce(tf.distribute.ReduceOp.SUM, gnorm, axis=None),
        )

    # the first call traces and XLA-compiles: XLA's absl start-up lines are dropped (vlrface.logs)
    return first_call_filtered(step), opt, lr


def train(
    backbone: tf.keras.Model,
    head,
    batches: FaceBatches,
    stage: Stage,
    desc: str = "train",
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    teacher: tf.keras.Model | None = None,
    strategy=None,
    mixed_precision: bool = False,
    teacher_cached: bool = False,
) -> list[dict]:
    """Train ``backbone`` and ``head`` in place; returns one dict of figures per epoch.

    ``on_step(global_step, loss)`` runs after every step (and its checkpoint). With ``teacher``
    the batches must carry the HR images (``FaceBatches(with_hr=True)``). Raises
    ``NonFiniteLossError`` (a ``FloatingPointError``) as soon as the loss or the gradient norm is
    not finite, before any checkpoint of that step is written.
    """
    strategy = strategy or tf.distribute.get_strategy()
    distributed = strategy is not tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    schedule, sched_state = stage.schedule, stage.schedule.initial_state()
    step, opt, lr = build_step(
        backbone,
        head,
        stage,
        schedule.lr_for(0, sched_state),
        teacher,
        strategy,
        mixed_precision,
        teacher_cached,
    )

    groups = {
        "backbone": backbone.weights,
        "head": head.weights,
        "optimizer": opt.variables,
        "lr": [lr],
    }
    if mixed_precision:  # tf-keras keeps the dynamic loss scale outside ``opt.variables``
        scale = opt._loss_scale
        groups["loss_scale"] = [scale._current_loss_scale, scale._counter]
    ema = WeightAverage(backbone, stage.ema, strategy) if stage.ema is not None else None
    if ema is not None:
        groups["ema"] = ema.shadow
    fingerprint = {
        "stage": desc,
        "seed": batches.seed,
        "batch_size": batches.batch_size,
        "steps_per_epoch": len(batches),
        "images": len(batches.paths),
        "labels_sha": _labels_digest(batches.labels),
        "loss": stage.loss,
        "teacher": teacher is not None,
        # the distillation term: resuming under another weight or distance changes the result
        "distill": _distill_key(stage) if teacher is not None else None,
        "policy": batches.vlr.policy_dict() if batches.vlr is not None else None,
        "freeze_bn": stage.freeze_bn,
        "freeze": stage.freeze,
        "ema": stage.ema,
        "optimizer": stage.optimizer.name,
    }
    ckpt = None
    if stage.checkpoint_dir:
        ckpt = Checkpointer(stage.checkpoint_dir, stage.keep_checkpoints)
    history: list[dict] = []
    start_epoch, start_step = 0, 0
    losses, hits, seen = [], 0, 0
    last_saved = None
    if ckpt is not None:
        last = ckpt.latest()
        if last is not None and not stage.resume:
            raise ConfigError(
                f"checkpoint_dir {ckpt.dir} already holds checkpoints ({last.name}); set "
                "'resume: true' to continue from them, or choose an empty checkpoint_dir"
            )
        if last is not None:
            state = Checkpointer.state(last)
            for key, want in fingerprint.items():
                saved = state["fingerprint"].get(key, _FINGERPRINT_BEFORE.get(key))
                if saved != want:
                    raise CheckpointMismatchError(
                        f"{last}/state.json: '{key}' is {saved!r}, this "
                        f"run's {want!r}: the checkpoint belongs to another run"
                    )
            Checkpointer.restore(last, groups, state)
            start_epoch, start_step = state["epoch"], state["step"]
            sched_state, history = state["schedule_state"], state["history"]
            losses = state["partial"]["losses"]
            hits, seen = state["partial"]["hits"], state["partial"]["seen"]
            last_saved = state["global_step"]
            log.info(
                "%s: resumed from %s (epoch %d, step %d)", desc, last, start_epoch + 1, start_step
            )
        elif stage.resume:
            log.info("%s: resume requested, no checkpoint in %s: starting afresh", desc, ckpt.dir)

    writer = is_chief(strategy)  # other workers restore from the chief's checkpoints only

    def save(epoch: int, next_step: int, global_step: int) -> Path | None:
        nonlocal last_saved
        last_saved = global_step
        if not writer:  # read what the chief reads: on-read synced variables all-reduce
            for variables in groups.values():
                for v in variables:
                    v.numpy()
            return None
        return ckpt.save(
            groups,
            {
                "epoch": epoch,
                "step": next_step,
                "global_step": global_step,
                "schedule_state": sched_state,
                "schedule": schedule.describe(),
                "history": history,
                "partial": {"losses": losses, "hits": hits, "seen": seen},
                # the RNG: every random draw of a step comes from the loader's generators,
                # keyed by (seed, epoch, step); the models hold no stateful random ops
                "rng": {"data_seed": batches.seed, "keyed_by": "seed, epoch, step"},
                "fingerprint": fingerprint,
            },
        )

    zeros = np.zeros((batches.batch_size, 1, 1, 1), np.float32)
    if teacher_cached and batches.teacher_table is None:
        raise ValueError("teacher_cached needs FaceBatches(teacher_table=...)")

    def feed(a):
        if not distributed or replicas == 1:
            return tf.constant(a)
        n = len(a) // replicas
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(a[ctx.replica_id_in_sync_group * n :][:n])
        )

    per_epoch = len(batches)
    for epoch in range(start_epoch, stage.epochs):
        lr.assign(schedule.lr_for(epoch, sched_state))
        first = start_step if epoch == start_epoch else 0
        if first == 0:
            losses, hits, seen = [], 0, 0
        bar = tqdm(
            batches.epoch(epoch, start=first),
            total=per_epoch,
            initial=first,
            disable=not progress,
            desc=f"{desc} epoch {epoch + 1}/{stage.epochs}",
            unit="batch",
        )
        # with process workers, ``batch`` is a view of its shared-memory slot, valid until the
        # next turn of this loop (FaceBatches(copy=False), set in run_stage): use it in the
        # turn, copy anything to keep
        for i, batch in enumerate(bar, start=first):
            x, y = batch[0], batch[1]
            x_hr = batch[2] if teacher is not None else zeros
            # the warm-up's rate, a pure function of the step (resumes exactly); the step after
            # it goes back to the epoch's rate, which the epoch's start set otherwise
            if epoch * per_epoch + i <= schedule.warmup_steps:
                lr.assign(schedule.lr_at(epoch, epoch * per_epoch + i, sched_state))
            loss, hit, gnorm = step(feed(x), feed(y), feed(x_hr))
            loss, gnorm = float(loss), float(gnorm)
            global_step = epoch * per_epoch + i + 1
            # with loss scaling, an overflowing gradient is expected: the optimizer skips the step
            if not (math.isfinite(loss) and (mixed_precision or math.isfinite(gnorm))):
                what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {gnorm}"
                kept = ckpt.latest() if ckpt is not None else None
                raise NonFiniteLossError(
                    f"{desc}: {what} at epoch {epoch + 1}, step {i + 1}/{per_epoch} (global step "
                    f"{global_step}); training stopped"
                    + (f", last good checkpoint kept: {kept}" if kept else ", no checkpoint")
                )
            if ema is not None:
                ema.update(global_step)
            losses.append(loss)
            hits, seen = hits + int(hit), seen + len(y)
            bar.set_postfix(loss=f"{loss:.3f}")
            if i + 1 == per_epoch:
                record = {
                    "epoch": epoch + 1,
                    "loss": float(np.mean(losses)),
                    "train_acc": hits / max(seen, 1),
                    "lr": float(lr.numpy()),
                }
                history.append(record)
                sched_state = schedule.update(sched_state, record["loss"])
                if on_epoch is not None:
                    on_epoch(epoch, record)
            every = stage.checkpoint_every
            if ckpt is not None and every and global_step % every == 0:
                done = i + 1 == per_epoch
                save(epoch + 1 if done else epoch, 0 if done else i + 1, global_step)
            if on_step is not None:
                on_step(global_step, loss)
        bar.close()
    if ckpt is not None and last_saved != stage.epochs * per_epoch:
        save(stage.epochs, 0, stage.epochs * per_epoch)  # the finished stage
    if ema is not None:  # after the last checkpoint, which keeps the trained weights too
        ema.apply()
        log.info("%s: backbone weights = their moving average (ema %g)", desc, stage.ema)
    return history


class WeightAverage:
    """An exponential moving average of a model's floating-point weights (Polyak averaging; the
    BatchNorm moving statistics included, as timm's ``ModelEmaV2`` does): after global step
    ``t`` each shadow ``s = d * s + (1 - d) * w`` with ``d = min(decay, (1 + t) / (10 + t))``
    (the warm-up of TF's ``ExponentialMovingAverage(num_updates=...)``, so a short stage is not
    dominated by its starting weights). ``d`` is a pure function of ``t``, so a resumed stage
    (the shadows are checkpointed as the group ``ema``) averages exactly as an uninterrupted one.
    ``apply()`` writes the averages into the model."""

    def __init__(self, model: tf.keras.Model, decay: float, strategy=None):
        if not 0 < decay < 1:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.weights = [w for w in model.weights if w.dtype.is_floating]
        with (strategy or tf.distribute.get_strategy()).scope():
            self.shadow = [
                tf.Variable(w.read_value(), trainable=False, name=f"ema/{i}")
                for i, w in enumerate(self.weights)
            ]

        @tf.function(reduce_retracing=True)
        def update(d):
            for s, w in zip(self.shadow, self.weights, strict=True):
                s.assign(d * s + (1.0 - d) * w)

        self._update = update

    def decay_at(self, global_step: int) -> float:
        return min(self.decay, (1.0 + global_step) / (10.0 + global_step))

    def update(self, global_step: int) -> None:
        self._update(tf.constant(self.decay_at(global_step), tf.float32))

    def apply(self) -> None:
        for s, w in zip(self.shadow, self.weights, strict=True):
            w.assign(s)


def _distill_key(stage: Stage) -> list:
    """The distillation settings a resumed stage must share (the head weight only when it is
    not 1, so that checkpoints written before it existed still resume)."""
    key = [stage.distill_lambda, stage.distill_distance]
    return key + [stage.distill_head_weight] if stage.distill_head_weight != 1.0 else key


def _labels_digest(labels: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(labels, np.int32).tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# a stage from the configuration


def stage_from_config(stage_cfg) -> Stage:
    """A ``Stage`` of a ``vlrface.config.keras.StageConfig``."""
    teacher = stage_cfg.teacher
    return Stage(
        epochs=stage_cfg.epochs,
        batch_size=stage_cfg.batch_size,
        schedule=LRSchedule.from_config(stage_cfg.schedule, stage_cfg.lr),
        optimizer=Optimizer(stage_cfg.momentum, stage_cfg.weight_decay, stage_cfg.optimizer),
        loss=stage_cfg.head.kind,
        head_params=stage_cfg.head.params(),
        distill_lambda=teacher.lam if teacher else 0.1,
        distill_reduction=teacher.reduction if teacher else "mean",
        distill_distance=teacher.distance if teacher else "mse",
        distill_head_weight=teacher.head_weight if teacher else 1.0,
        checkpoint_every=stage_cfg.checkpoint_every,
        checkpoint_dir=stage_cfg.checkpoint_dir,
        keep_checkpoints=stage_cfg.keep_checkpoints,
        resume=stage_cfg.resume,
        strategy=stage_cfg.strategy,
        mixed_precision=stage_cfg.mixed_precision,
        freeze_bn=stage_cfg.freeze_bn,
        freeze=stage_cfg.freeze,
        ema=stage_cfg.ema,
    )


def freeze_batch_norm(model: tf.keras.Model) -> int:
    """Put every BatchNormalization layer of ``model`` in inference mode for training: its
    moving statistics and its scale and offset stay as they are (a Keras BN layer that is not
    trainable normalises with its moving statistics even under ``training=True``). Returns how
    many layers it froze."""
    frozen = 0
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen


def freeze_layers(model: tf.keras.Model, which: str) -> int:
    """Keep the starting weights of ``model``'s ``quantized`` layers (larq's quantized layers)
    or of its ``float`` layers (the other layers with weights; BatchNormalization is
    ``freeze_bn``'s). Returns how many layers it froze."""
    from larq.layers_base import BaseLayer

    if which not in ("quantized", "float"):
        raise ValueError(f"freeze: expected quantized or float, got {which!r}")
    frozen = 0
    for layer in model.submodules:
        if isinstance(layer, tf.keras.Model) or not getattr(layer, "weights", None):
            continue
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            continue
        if isinstance(layer, BaseLayer) == (which == "quantized"):
            layer.trainable = False
            frozen += 1
    return frozen


def load_teacher(teacher_cfg) -> tf.keras.Model:
    """The frozen teacher of a ``vlrface.config.keras.TeacherConfig``."""
    from vlrface.models.keras import build_model
    from vlrface.models.keras.checkpoint import copy_weights, load_h5

    if teacher_cfg.path is not None:
        model = load_h5(teacher_cfg.path)  # any saved Keras model: .keras or .h5
    else:
        model = build_model(teacher_cfg.model)
        copy_weights(load_h5(teacher_cfg.checkpoint), model, teacher_cfg.checkpoint)
    model.trainable = False
    return model


def weights_digest(model: tf.keras.Model) -> str:
    """sha256 over the model's weight arrays (sorted by their own digests, so two definitions
    holding the same arrays in another layer order agree)."""
    import hashlib

    digests = sorted(
        hashlib.sha256(np.ascontiguousarray(w).tobytes()).hexdigest() for w in model.get_weights()
    )
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def embedding_table(
    model: tf.keras.Model,
    root: str,
    paths,
    size: int,
    mirrored: bool,
    batch: int = 128,
    cache_dir: str | Path | None = None,
    desc: str = "embed",
) -> np.ndarray:
    """``(N, 2, D)`` float32: ``model``'s inference embedding of each face (``[:, 0]``) and of
    its mirror image (``[:, 1]``; a copy of ``[:, 0]`` unless ``mirrored``). With ``cache_dir``
    the table is kept as ``<digest>.npy``, the digest covering the weights, faces and sizes."""
    import hashlib

    from vlrface.embedders import KerasEmbedder
    from vlrface.preprocess import load_face, normalize

    paths = [str(p) for p in paths]
    key = hashlib.sha256(
        json.dumps([weights_digest(model), str(root), paths, size, mirrored]).encode()
    ).hexdigest()[:32]
    cached = Path(cache_dir) / f"{key}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        table = np.load(cached)
        log.info("%s: embeddings from %s", desc, cached)
        return table
    fn = KerasEmbedder(model)
    out = []
    for start in tqdm(range(0, len(paths), batch), desc=desc, unit="batch"):
        faces = np.stack([load_face(root, p, size) for p in paths[start : start + batch]])
        views = [faces, faces[:, :, ::-1]] if mirrored else [faces]
        embs = [fn(normalize(v)) for v in views]
        out.append(np.stack(embs if mirrored else embs * 2, axis=1))
    table = np.concatenate(out).astype(np.float32)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(part, table)
        os.replace(part, cached)  # never a half-written table under the final name
    return table


def class_mean_centres(table: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(D, C)`` unit-norm class means of the unit-norm embeddings ``table[:, 0]``: a margin
    head's centres that start where a pre-trained backbone already puts each class."""
    emb = table[:, 0] / np.maximum(np.linalg.norm(table[:, 0], axis=1, keepdims=True), 1e-12)
    sums = np.zeros((n_classes, emb.shape[1]), np.float64)
    np.add.at(sums, labels, emb)
    centres = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return centres.T.astype(np.float32)


def run_stage(
    manifest,
    root: str,
    model_cfg,
    stage_cfg,
    seed: int,
    backbone: tf.keras.Model | None = None,
    centres: np.ndarray | None = None,
    desc: str = "train",
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    on_start: Callable[[dict], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    teacher: tf.keras.Model | None = None,
    in_this_process: bool = False,
):
    """Train one stage on the manifest's train split; returns ``(backbone, centres, history)``.

    ``model_cfg``/``stage_cfg`` are ``vlrface.config.keras`` sections. Starts from ``backbone``
    (a new model if ``None``) and from ``centres`` for the head when they fit the classes.
    ``on_start(info)`` receives what the run does before it starts: the degradation policy's
    ``policy_dict()``, loss, schedule, strategy, mixed precision and teacher. ``teacher`` (a
    frozen Keras model) overrides ``stage_cfg.teacher``.

    ``strategy: multi_worker`` with ``processes: N > 1``: the stage runs on N local worker
    processes (``vlrface.distributed.run_keras_stage``); the chief's ``on_start``/``on_epoch``
    figures reach the callbacks here while it trains, and the result is the chief's.
    ``in_this_process``: train here whatever ``processes`` says (what each of those worker
    processes runs; with ``strategy: multi_worker`` the cluster is ``TF_CONFIG``'s).
    """
    from vlrface.data.records import label_map
    from vlrface.models.keras import build_model

    alpha = stage_cfg.weight_ensemble
    for key in ("weight_ensemble", "output_ensemble"):
        if getattr(stage_cfg, key) is not None and backbone is None:
            raise ConfigError(f"{desc}.{key} needs a starting backbone (a fine-tune)")
    if stage_cfg.processes > 1 and not in_this_process:
        if on_step is not None:
            raise ValueError(f"{desc}: on_step runs in this process only (processes: 1)")
        from vlrface.distributed import run_keras_stage

        return run_keras_stage(
            manifest, root, model_cfg, stage_cfg, seed, backbone=backbone, centres=centres,
            desc=desc, on_epoch=on_epoch, progress=progress, on_start=on_start, teacher=teacher,
        )  # fmt: skip
    seed_everything(seed)
    train_df = manifest[manifest["split"] == "train"]
    labels = label_map(train_df)
    stage = stage_from_config(stage_cfg)
    strategy = make_strategy(stage.strategy)
    replicas = strategy.num_replicas_in_sync
    if stage.strategy != "default" and replicas == 1:
        log.info("%s: strategy %r has one replica here: as the default", desc, stage.strategy)
    if stage.batch_size % replicas:
        raise ConfigError(
            f"{desc}.batch_size {stage.batch_size} does not split over {replicas} replicas"
        )
    mixed = mixed_precision_applies(stage.mixed_precision) and backbone is None
    if stage.mixed_precision and backbone is not None:
        log.warning("%s: mixed_precision applies to a backbone built in the stage; the given "
                    "backbone keeps its float32 policy", desc)  # fmt: skip
    given = backbone is not None
    with strategy.scope():
        if backbone is None:
            if mixed:
                tf.keras.mixed_precision.set_global_policy("mixed_float16")
            try:
                backbone = build_model(model_cfg)
            finally:
                tf.keras.mixed_precision.set_global_policy("float32")
        size = int(backbone.input_shape[1])
        fits = centres is not None and centres.shape == (backbone.output_shape[-1], len(labels))
        if stage_cfg.head_init == "class_means" and not fits:
            start = embedding_table(
                backbone, root, train_df.path, size, False, cache_dir=stage_cfg.embedding_cache,
                desc=f"{desc} head init",
            )  # fmt: skip
            codes = train_df.identity.map(labels).to_numpy(np.int64)
            centres = class_mean_centres(start, codes, len(labels))
        # the head next, so that its initialisation does not depend on what follows
        head = make_head(len(labels), int(backbone.output_shape[-1]), stage, centres)
        if given and stage.strategy != "default":  # a strategy's variables live in its scope
            clone = tf.keras.models.clone_model(backbone)
            clone.set_weights(backbone.get_weights())
            backbone = clone
    if stage.freeze_bn:
        log.info("%s: %d BatchNormalization layers frozen", desc, freeze_batch_norm(backbone))
    if stage.freeze is not None:
        log.info("%s: %d %s layers frozen", desc, freeze_layers(backbone, stage.freeze),
                 stage.freeze)  # fmt: skip
    ensembled = alpha is not None or stage_cfg.output_ensemble is not None
    start_weights = [w.copy() for w in backbone.get_weights()] if ensembled else None
    if teacher is None and stage_cfg.teacher is not None:
        teacher = load_teacher(stage_cfg.teacher)
    size = int(backbone.input_shape[1])
    if teacher is not None:
        if tuple(teacher.input_shape[1:3]) != (size, size):
            raise ConfigError(
                f"{desc}.teacher takes {teacher.input_shape[1:3]} inputs, the student {size}x{size}"
            )
        if teacher.output_shape[-1] != backbone.output_shape[-1]:
            raise ConfigError(
                f"{desc}.teacher's embedding is {teacher.output_shape[-1]}-d, the student's "
                f"{backbone.output_shape[-1]}-d: the distillation MSE needs equal sizes"
            )
        teacher.trainable = False
    cached = teacher is not None and stage_cfg.teacher is not None and stage_cfg.teacher.cache
    table = None
    if cached:
        table = embedding_table(
            teacher, root, train_df.path, size, stage_cfg.flip,
            cache_dir=stage_cfg.embedding_cache, desc=f"{desc} teacher",
        )  # fmt: skip
    per_epoch = len(train_df) // stage.batch_size
    if stage_cfg.steps_per_epoch is not None:
        per_epoch = min(per_epoch, stage_cfg.steps_per_epoch)
    policy = build_policy(stage_cfg.degrade, max(stage.epochs * per_epoch, 1))
    batches = FaceBatches(
        root,
        train_df,
        labels,
        stage.batch_size,
        seed,
        size=size,
        flip=stage_cfg.flip,
        vlr=policy,
        with_hr=teacher is not None,
        workers=stage_cfg.loader_workers,
        kind=stage_cfg.loader_kind,
        teacher_table=table,
        max_batches=stage_cfg.steps_per_epoch,
        # zero-copy hand-off (process workers): safe here because ``train`` is done with a batch
        # before it asks for the next: ``feed`` turns each array into a tensor with
        # ``tf.constant`` (a copy, checked for TF 2.16; and a build that aliased aligned numpy
        # memory would still be safe: the step's loss depends on every input array and is read
        # by ``float(loss)`` before the loop turns); ``len(y)`` is read before it too, and
        # nothing keeps the batch (no prefetch of the loader's arrays, no callback sees them)
        copy=False,
    )
    info = {
        "policy": policy.policy_dict() if policy is not None else None,
        "loss": stage.loss,
        "loss_params": head_settings(head, stage.loss),
        "schedule": stage.schedule.describe(),
        "optimizer": stage.optimizer.describe(),
        "strategy": stage.strategy,
        "processes": stage_cfg.processes,
        "replicas": replicas,
        "mixed_precision": mixed,
        "teacher": (
            {
                "lam": stage.distill_lambda,
                "reduction": stage.distill_reduction,
                "distance": stage.distill_distance,
                "head_weight": stage.distill_head_weight,
            }
            | {"name": teacher.name, "cached": bool(cached)}
            if teacher is not None
            else None
        ),
        "head_init": stage_cfg.head_init,
        "freeze_bn": stage.freeze_bn,
        "freeze": stage.freeze,
        "weight_ensemble": stage_cfg.weight_ensemble,
        "output_ensemble": stage_cfg.output_ensemble,
        "ema": stage_cfg.ema,
        "steps_per_epoch": len(batches),
        "total_steps": stage.epochs * len(batches),
    }
    if on_start is not None:
        on_start(info)
    try:
        history = train(
            backbone,
            head,
            batches,
            stage,
            desc=desc,
            on_epoch=on_epoch,
            progress=progress,
            on_step=on_step,
            teacher=teacher,
            strategy=strategy,
            mixed_precision=mixed,
            teacher_cached=cached,
        )
    finally:
        batches.close()
    if alpha is not None:
        blend_weights(backbone, start_weights, alpha)
        log.info("%s: weights = %.2f x trained + %.2f x starting (weight_ensemble)", desc, alpha,
                 1 - alpha)  # fmt: skip
    if stage_cfg.output_ensemble is not None:
        beta = stage_cfg.output_ensemble
        backbone = output_ensemble(backbone, start_weights, beta)
        log.info("%s: embedding = %.2f x trained + %.2f x starting backbone's (output_ensemble)",
                 desc, beta, 1 - beta)  # fmt: skip
    return backbone, head.centres.numpy(), history


def output_ensemble(
    trained: tf.keras.Model, start: list[np.ndarray], alpha: float
) -> tf.keras.Model:
    """One model holding ``trained`` and a copy of it at the ``start`` weights side by side: the
    unit vector of ``alpha`` x the trained embedding + ``(1 - alpha)`` x the starting one's, each
    made unit-length first (an output-space ensemble of a fine-tune with its starting point).

    Built from Keras' own layers only, so it saves, loads (``safe_mode``) and converts like any
    backbone; it costs the two backbones' inference."""
    layers = tf.keras.layers
    base = tf.keras.models.clone_model(trained)
    base.set_weights(start)
    base._name = f"{trained.name}_start"  # the two nested models need distinct names
    base.trainable = False
    image = tf.keras.Input(trained.input_shape[1:], name="image")
    unit = [layers.UnitNormalization(name=f"{n}_unit") for n in ("trained", "start")]
    mixed = layers.Add(name="output_ensemble")(
        [
            layers.Rescaling(alpha, name="trained_weight")(unit[0](trained(image))),
            layers.Rescaling(1 - alpha, name="start_weight")(unit[1](base(image))),
        ]
    )
    out = layers.UnitNormalization(name="embedding_unit")(mixed)
    return tf.keras.Model(image, out, name=f"{trained.name}_output_ensemble")


def blend_weights(model: tf.keras.Model, start: list[np.ndarray], alpha: float) -> None:
    """Set ``model``'s weights to ``alpha * current + (1 - alpha) * start`` (a weight-space
    ensemble of a fine-tune with its starting point); integer weights keep their current value."""
    current = model.get_weights()
    if len(current) != len(start):
        raise ValueError(f"{len(start)} starting weights for {len(current)} model weights")
    model.set_weights(
        [
            (alpha * c + (1 - alpha) * s).astype(c.dtype) if np.issubdtype(c.dtype, np.floating)
            else c
            for c, s in zip(current, start, strict=True)
        ]
    )  # fmt: skip
