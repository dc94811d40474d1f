"""What both training loops share, framework-free: seeding, the learning-rate schedule and the
non-finite-loss error. ``vlrface.training.keras`` and ``vlrface.training.torch`` build on it."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from vlrface.errors import ConfigError, VlrfaceError


class NonFiniteLossError(VlrfaceError, FloatingPointError):
    """The loss, the gradients or a parameter became NaN/Inf; the message names the stage, the
    epoch and the step, and which checkpoint was kept."""


def seed_python_numpy(seed: int) -> None:
    """Seed ``random`` and NumPy's global generator (each track seeds its framework too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)


def build_policy(degrade: dict | None, total_steps: int):
    """The degradation policy of a stage's ``degrade`` mapping (``None``: no degradation); a
    curriculum without ``total_steps`` spans the stage (epochs x batches per epoch)."""
    from vlrface.degrade import policy_from_config

    if degrade is None:
        return None
    cfg = dict(degrade)
    if cfg.get("kind") == "curriculum":
        cfg.setdefault("total_steps", total_steps)
    try:
        return policy_from_config(cfg)
    except ValueError as exc:
        raise ConfigError(f"degrade: {exc}") from None


@dataclass(frozen=True)
class LRSchedule:
    """The epoch-wise learning rate of a stage (``vlrface.config.common.ScheduleConfig``).

    * ``step``: ``lr * gamma ** (number of milestones <= epoch)`` (0-based epochs);
    * ``constant``: ``lr``;
    * ``plateau``: when the epoch's mean training loss has not fallen below
      ``best * (1 - threshold)`` for more than ``patience`` epochs (``patience: 0`` lowers the
      lr after the first epoch without improvement, as PyTorch's ``ReduceLROnPlateau``), go to
      the next of ``levels`` below the current lr (absolute rates), or multiply by ``factor``;
      never below ``min_lr``.

    The schedule is a pure function of its JSON state (current lr, best loss, epochs without
    improvement), which the checkpoints of both tracks save: ``initial_state``, ``lr_for`` the
    epoch about to run (``lr_at`` a step of it, with the warm-up), ``update`` with the epoch's
    mean loss.
    """

    kind: str = "step"
    lr: float = 0.01
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    factor: float = 0.2
    levels: tuple[float, ...] | None = None
    patience: int = 1
    threshold: float = 1e-3
    min_lr: float = 0.0
    warmup_steps: int = 0

    @classmethod
    def from_config(cls, cfg, lr: float) -> LRSchedule:
        """The schedule of a ``ScheduleConfig`` at base learning rate ``lr``."""
        return cls(
            kind=cfg.kind,
            lr=lr,
            milestones=tuple(cfg.milestones),
            gamma=cfg.gamma,
            factor=cfg.factor,
            levels=tuple(cfg.levels) if cfg.levels is not None else None,
            patience=cfg.patience,
            threshold=cfg.threshold,
            min_lr=cfg.min_lr,
            warmup_steps=cfg.warmup_steps,
        )

    def initial_state(self) -> dict:
        return {"lr": self.lr, "best": None, "bad_epochs": 0}

    def lr_for(self, epoch: int, state: dict) -> float:
        if self.kind == "step":
            return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.kind == "plateau":
            return state["lr"]
        return self.lr

    def lr_at(self, epoch: int, step: int, state: dict) -> float:
        """The rate of the stage's optimizer step ``step`` (0-based, counted over the whole
        stage) in ``epoch``: ``lr_for`` the epoch, scaled by ``(step + 1) / warmup_steps``
        during the warm-up."""
        lr = self.lr_for(epoch, state)
        if step < self.warmup_steps:
            return lr * (step + 1) / self.warmup_steps
        return lr

    def update(self, state: dict, loss: float) -> dict:
        """The state after an epoch whose mean training loss was ``loss``."""
        if self.kind != "plateau":
            return state
        best = state["best"]
        if best is None or loss < best * (1.0 - self.threshold):
            return {**state, "best": loss, "bad_epochs": 0}
        bad = state["bad_epochs"] + 1
        if bad <= self.patience:
            return {**state, "bad_epochs": bad}
        lr = state["lr"]
        if self.levels is not None:
            lr = next((v for v in self.levels if v < lr), lr)
        else:
            lr = max(lr * self.factor, self.min_lr)
        return {**state, "lr": lr, "bad_epochs": 0}

    def describe(self) -> dict:
        """The schedule's settings that apply to its kind (logged with the run)."""
        out = self._describe_kind()
        return {**out, "warmup_steps": self.warmup_steps} if self.warmup_steps else out

    def _describe_kind(self) -> dict:
        if self.kind == "step":
            return {"kind": "step", "lr": self.lr, "milestones": list(self.milestones),
                    "gamma": self.gamma}  # fmt: skip
        if self.kind == "constant":
            return {"kind": "constant", "lr": self.lr}
        out = {"kind": "plateau", "lr": self.lr, "patience": self.patience,
               "threshold": self.threshold}  # fmt: skip
        if self.levels is not None:
            return {**out, "levels": list(self.levels)}
        return {**out, "factor": self.factor, "min_lr": self.min_lr}
