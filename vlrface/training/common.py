"""What both training loops share, framework-free: learning-rate schedules and the errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vlrface.errors import VlrfaceError


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients became NaN/Inf; names the stage, epoch and step."""


@dataclass(frozen=True)
class Schedule:
    """Step schedule: ``lr * gamma ** (number of milestones <= epoch)`` (0-based epochs)."""

    lr: float = 0.01
    milestones: tuple[int, ...] = (9, 15, 18)
    gamma: float = 0.1

    def at(self, epoch: int) -> float:
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    def initial_state(self) -> dict:
        return {}

    def lr_for(self, epoch: int, state: dict) -> float:
        return self.at(epoch)

    def update(self, state: dict, loss: float) -> dict:
        return state

    def describe(self) -> dict:
        return {"kind": "step", **asdict(self), "milestones": list(self.milestones)}


@dataclass(frozen=True)
class Plateau:
    """Reduce-on-plateau: ``lr *= factor`` after ``patience`` epochs whose mean training loss did
    not fall below ``best * (1 - threshold)``; never below ``min_lr``. The state (current lr,
    best loss, epochs without improvement) is a JSON dict, saved with every checkpoint."""

    lr: float = 0.01
    factor: float = 0.1
    patience: int = 2
    threshold: float = 1e-4
    min_lr: float = 0.0

    def initial_state(self) -> dict:
        return {"lr": self.lr, "best": None, "bad_epochs": 0}

    def lr_for(self, epoch: int, state: dict) -> float:
        return state["lr"]

    def update(self, state: dict, loss: float) -> dict:
        best = state["best"]
        if best is None or loss < best * (1.0 - self.threshold):
            return {**state, "best": loss, "bad_epochs": 0}
        bad = state["bad_epochs"] + 1
        if bad >= self.patience:
            return {**state, "lr": max(state["lr"] * self.factor, self.min_lr), "bad_epochs": 0}
        return {**state, "bad_epochs": bad}

    def describe(self) -> dict:
        return {"kind": "plateau", **asdict(self)}


class NonFiniteError(VlrfaceError):
    """A loss or parameter became NaN/Inf; the message names the step and the checkpoint kept."""
