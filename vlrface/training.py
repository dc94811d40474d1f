"""Training a Keras face backbone with a margin head: SGDW, the paper's step schedule, seeds.

BinaryFaceNet (papers/binaryfacenet.md §3.2): SGD with momentum 0.9 and decoupled weight decay
5e-4 (SGDW), lr 0.01 multiplied by 0.1 at epochs 9, 15 and 18, ArcFace with s = 16. The loop is a
plain ``tf.GradientTape`` step so that seeds, progress and per-epoch logging are explicit; with
``tf.config.experimental.enable_op_determinism`` two runs with the same seed give the same
weights bit for bit on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from vlrface._keras import tf
from vlrface.data.loader import FaceBatches
from vlrface.losses import ArcFaceHead, arcface_loss


@dataclass(frozen=True)
class Schedule:
    """Step schedule: ``lr * gamma ** (number of milestones <= epoch)`` (0-based epochs)."""

    lr: float = 0.01
    milestones: tuple[int, ...] = (9, 15, 18)
    gamma: float = 0.1

    def at(self, epoch: int) -> float:
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)


@dataclass(frozen=True)
class Optimizer:
    momentum: float = 0.9
    weight_decay: float = 5e-4


@dataclass(frozen=True)
class Stage:
    """One training stage (pre-training or a fine-tune)."""

    epochs: int
    batch_size: int = 128
    schedule: Schedule = field(default_factory=Schedule)
    optimizer: Optimizer = field(default_factory=Optimizer)
    arcface_scale: float = 16.0
    arcface_margin: float = 0.5


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TF's kernels deterministic."""
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def make_head(n_classes: int, embedding: int, stage: Stage, centres: np.ndarray | None = None):
    """An ArcFace head, initialised from ``centres`` when their shape fits."""
    head = ArcFaceHead(n_classes, scale=stage.arcface_scale, margin=stage.arcface_margin)
    head.build((None, embedding))
    if centres is not None and centres.shape == (embedding, n_classes):
        head.centres.assign(centres)
    return head


def train(
    backbone: tf.keras.Model,
    head: ArcFaceHead,
    batches: FaceBatches,
    stage: Stage,
    desc: str = "train",
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train ``backbone`` and ``head`` in place; returns one dict of figures per epoch.

    Raises ``FloatingPointError`` as soon as the loss is not finite.
    """
    lr = tf.Variable(stage.schedule.at(0), trainable=False, dtype=tf.float32)
    opt = tf.keras.optimizers.SGD(
        learning_rate=lr,
        momentum=stage.optimizer.momentum,
        weight_decay=stage.optimizer.weight_decay,
    )
    variables = backbone.trainable_variables + head.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = head(backbone(x, training=True), y)
            loss = arcface_loss(logits, y)
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        hits = tf.reduce_sum(tf.cast(tf.argmax(logits, 1, output_type=tf.int32) == y, tf.int32))
        return loss, hits

    history = []
    for epoch in range(stage.epochs):
        lr.assign(stage.schedule.at(epoch))
        losses, hits, seen = [], 0, 0
        bar = tqdm(
            batches.epoch(epoch),
            total=len(batches),
            disable=not progress,
            desc=f"{desc} epoch {epoch + 1}/{stage.epochs}",
            unit="batch",
        )
        for x, y in bar:
            loss, hit = step(tf.constant(x), tf.constant(y))
            loss = float(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss} at epoch {epoch + 1}")
            losses.append(loss)
            hits, seen = hits + int(hit), seen + len(y)
            bar.set_postfix(loss=f"{loss:.3f}")
        record = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "train_acc": hits / max(seen, 1),
            "lr": float(lr.numpy()),
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
    return history


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
):
    """Train one stage on the manifest's train split; returns ``(backbone, centres, history)``.

    ``model_cfg``/``stage_cfg`` are ``vlrface.config`` sections. Starts from ``backbone`` (a new
    model if ``None``) and from ``centres`` for the ArcFace head when they fit the classes.
    """
    from vlrface.data.records import label_map
    from vlrface.degrade import VLRPolicy
    from vlrface.models import build_model

    seed_everything(seed)
    train_df = manifest[manifest["split"] == "train"]
    labels = label_map(train_df)
    if backbone is None:
        backbone = build_model(model_cfg)
    stage = Stage(
        epochs=stage_cfg.epochs,
        batch_size=stage_cfg.batch_size,
        schedule=Schedule(stage_cfg.lr, tuple(stage_cfg.milestones), stage_cfg.gamma),
        optimizer=Optimizer(stage_cfg.momentum, stage_cfg.weight_decay),
        arcface_scale=stage_cfg.arcface_scale,
        arcface_margin=stage_cfg.arcface_margin,
    )
    vlr = stage_cfg.vlr
    policy = (
        VLRPolicy(vlr.probability, tuple(vlr.sizes), vlr.down, vlr.up)
        if vlr.probability > 0
        else None
    )
    batches = FaceBatches(
        root,
        train_df,
        labels,
        stage.batch_size,
        seed,
        size=int(backbone.input_shape[1]),
        flip=stage_cfg.flip,
        vlr=policy,
    )
    head = make_head(len(labels), int(backbone.output_shape[-1]), stage, centres)
    history = train(backbone, head, batches, stage, desc=desc, on_epoch=on_epoch, progress=progress)
    return backbone, head.centres.numpy(), history
