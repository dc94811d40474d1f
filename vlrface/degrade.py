"""Resolution degradation: one implementation, used for training augmentation and evaluation.

``degrade(img, r)`` down-samples an ``HxWxC`` uint8 image to ``r x r`` and (by default) back to
its original size, with the interpolation chosen by name. BinaryFaceNet simulates VLR faces
with inter-area down-sampling to 7/14/21/28/56 px and inter-area up-sampling back to 112x112
(BinaryFaceNet paper, Sec. 3.2.1). Results differ across cv2/PIL/TF resamplers, so every name maps
to one library and the policy is logged with every run (``policy_dict``, key ``library``):

* OpenCV (``cv2.resize``, no antialiasing): ``area``, ``bicubic`` (Keys a = -0.75), ``bilinear``,
  ``nearest``;
* Pillow (``Image.resize``, whose filter support widens with the scale factor, i.e. antialiased
  when down-sampling, as ``tf.image.resize(antialias=True)``; Keys a = -0.5 as TF):
  ``bicubic_aa`` (Knoche et al.'s octuplet/CRBT recipe: antialiased bicubic down, bicubic up;
  docs/datasets.md) and ``bilinear_aa`` (Massoli et al.'s PIL ``BILINEAR``).

Policies are plain-numpy functions of ``(uint8 image, numpy Generator)``, so the same object serves
the tf.data and PyTorch adapters (``vlrface.data.streaming``), which call ``policy.apply(img, rng)``
and get ``(image, r)`` back, ``r = 0`` where the image was left at full resolution:

* ``VLRPolicy``: with probability p, a size drawn from a fixed set (BinaryFaceNet);
* ``MassoliPolicy``: with probability p, the shortest side to ``2**k``, aspect kept
  ("Improving Multi-Scale Face Recognition using VGGFace2", Sec. 3.2);
* ``CurriculumPolicy``: p rising linearly from 0 to 1 over training
  ("Cross-Resolution Learning for Face Recognition", Sec. 5);
* ``CrossResolutionPolicy``: a fixed share of LR images in every batch (Knoche et al., CRBT).

``policy_from_config`` builds any of them from a config dict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import cv2
import numpy as np
import PIL
from PIL import Image

INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "bicubic": cv2.INTER_CUBIC,
    "bilinear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
}
PIL_INTERPOLATIONS = {
    "bicubic_aa": Image.Resampling.BICUBIC,
    "bilinear_aa": Image.Resampling.BILINEAR,
}
#: the sizes BinaryFaceNet degrades to (the authors' LFW packs: 7, 14, 21, 28 and 56 px)
BINARYFACENET_SIZES = (7, 14, 21, 28, 56)


def _interp(name: str) -> str:
    if name in INTERPOLATIONS or name in PIL_INTERPOLATIONS:
        return name
    known = sorted({*INTERPOLATIONS, *PIL_INTERPOLATIONS})
    raise ValueError(f"unknown interpolation {name!r}; choose one of {known}")


def library(*names: str) -> str:
    """The resampling library (and version) behind interpolation ``names``, as logged."""
    libs = []
    if any(n in INTERPOLATIONS for n in names):
        libs.append(f"opencv-{cv2.__version__}")
    if any(n in PIL_INTERPOLATIONS for n in names):
        libs.append(f"pillow-{PIL.__version__}")
    return "+".join(libs)


def resize(img: np.ndarray, width: int, height: int, interp: str) -> np.ndarray:
    """Resize a uint8 ``HxW`` or ``HxWxC`` image to ``width x height`` with ``interp``."""
    if _interp(interp) in INTERPOLATIONS:
        out = cv2.resize(img, (width, height), interpolation=INTERPOLATIONS[interp])
        return out[..., None] if img.ndim == 3 and out.ndim == 2 else out
    if img.dtype != np.uint8:
        raise ValueError(f"interpolation {interp!r} (Pillow) needs a uint8 image, got {img.dtype}")
    resample = PIL_INTERPOLATIONS[interp]
    if img.ndim == 3 and img.shape[2] == 3:
        return np.asarray(Image.fromarray(img, "RGB").resize((width, height), resample))
    planes = img[..., None] if img.ndim == 2 else img
    out = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(planes[..., c]), "L").resize(
                (width, height), resample
            )
        )
        for c in range(planes.shape[2])
    ]
    return out[0] if img.ndim == 2 else np.stack(out, axis=-1)


def degrade(
    img: np.ndarray,
    r: int,
    down: str = "area",
    up: str | None = "area",
    keep_aspect: bool = False,
) -> np.ndarray:
    """Down-sample ``img`` to ``r x r`` with ``down``; up-sample back to its size with ``up``.

    ``keep_aspect`` sets the shortest side to ``r`` and the other to ``int(r * ratio)`` instead
    (Massoli's ``_lower_resolution``, truncating as its code does). ``up=None`` returns the small
    image. ``r`` at or above the shortest side returns a copy (Massoli's skip rule).
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"degrade expects an HxW or HxWxC image, got shape {img.shape}")
    h, w = img.shape[:2]
    if r < 1:
        raise ValueError(f"resolution must be >= 1 px, got {r}")
    _interp(down)
    if up is not None:
        _interp(up)
    if r >= min(h, w):
        return img.copy()
    sw, sh = r, r
    if keep_aspect:
        sw, sh = (int(r * w / h), r) if h < w else (r, int(r * h / w))
    small = resize(img, sw, sh, down)
    return small if up is None else resize(small, w, h, up)


@dataclass(frozen=True)
class VLRPolicy:
    """Random VLR augmentation: with ``probability``, degrade to a size drawn from ``sizes``."""

    probability: float = 0.5
    sizes: tuple[int, ...] = (7, 14, 28, 56)
    down: str = "area"
    up: str = "area"

    def __post_init__(self):
        _check_probability(self.probability)
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"VLR sizes must be positive pixel sizes, got {self.sizes}")
        _interp(self.down), _interp(self.up)

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Return ``(image, r)``; ``r`` is 0 where the image was left at full resolution."""
        if self.probability > 0 and rng.uniform() < self.probability:
            r = int(self.sizes[rng.integers(len(self.sizes))])
            return degrade(img, r, self.down, self.up), r
        return img, 0

    def policy_dict(self) -> dict:
        """The policy as logged with a run (library included)."""
        return {
            "kind": "fixed",
            **asdict(self),
            "sizes": list(self.sizes),
            "library": library(self.down, self.up),
        }


@dataclass(frozen=True)
class MassoliPolicy:
    """Massoli et al.'s random down-sampling (multi-scale VGGFace2 paper, Sec. 3.2).

    With ``probability`` p, the shortest side goes to ``res = 2**int(lo + (hi - lo) * U[0,1))``
    (aspect kept, PIL bilinear down and up) and the image back to its size; skipped (``r = 0``)
    where ``res`` is at or above the shortest side. ``exponents = (lo, hi)`` is half-open:

    * ``(3, 8)`` (default): the anchor code (``vggface2_custom_dataset.py``,
      ``2**int(3 + 5*rand)``), res in {8, 16, 32, 64, 128};
    * ``(3, 9)``: the paper's "integer uniform in [3, 8]", res in {8, ..., 256}.

    The anchor code's default p is 0.1 (the paper reports its best results at p = 0.7).
    """

    probability: float = 0.1
    exponents: tuple[int, int] = (3, 8)
    down: str = "bilinear_aa"
    up: str = "bilinear_aa"

    def __post_init__(self):
        _check_probability(self.probability)
        lo, hi = self.exponents
        if not 0 <= lo < hi:
            raise ValueError(f"Massoli exponents must be 0 <= lo < hi, got {self.exponents}")
        _interp(self.down), _interp(self.up)

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        if self.probability > 0 and rng.uniform() < self.probability:
            lo, hi = self.exponents
            res = 2 ** int(lo + (hi - lo) * rng.uniform())
            if res < min(img.shape[:2]):
                return degrade(img, res, self.down, self.up, keep_aspect=True), res
        return img, 0

    def policy_dict(self) -> dict:
        return {
            "kind": "massoli",
            **asdict(self),
            "exponents": list(self.exponents),
            "library": library(self.down, self.up),
        }


def curriculum_probability(
    step: int, total_steps: int, start: float = 0.0, end: float = 1.0
) -> float:
    """Down-sampling probability at ``step``: linear from ``start`` to ``end`` over training.

    Pure; clamped to ``end`` past ``total_steps``. Massoli et al. raise p linearly from 0 to 1
    ("Cross-Resolution Learning for Face Recognition", Sec. 5); their code instead adds 0.1 every
    ``curr_step_iterations`` images from 0.1 (a staircase), not reproduced here.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    frac = min(max(step / total_steps, 0.0), 1.0)
    return start + (end - start) * frac


@dataclass(frozen=True)
class CurriculumPolicy:
    """``base`` applied with the curriculum probability of ``step`` (see ``at``).

    The policy is immutable: a trainer asks for ``policy.at(step)`` (a new policy) and hands it
    to the loader; ``apply`` uses the probability at ``self.step``.
    """

    total_steps: int
    step: int = 0
    start: float = 0.0
    end: float = 1.0
    base: VLRPolicy | MassoliPolicy = field(default_factory=MassoliPolicy)

    def __post_init__(self):
        _check_probability(self.start), _check_probability(self.end)
        curriculum_probability(self.step, self.total_steps)  # validates total_steps

    @property
    def probability(self) -> float:
        return curriculum_probability(self.step, self.total_steps, self.start, self.end)

    def at(self, step: int) -> CurriculumPolicy:
        return replace(self, step=int(step))

    def current(self) -> VLRPolicy | MassoliPolicy:
        """The base policy with the probability of the current step."""
        return replace(self.base, probability=self.probability)

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        return self.current().apply(img, rng)

    def policy_dict(self) -> dict:
        base = {k: v for k, v in self.base.policy_dict().items() if k != "probability"}
        return {
            "kind": "curriculum",
            "total_steps": self.total_steps,
            "step": self.step,
            "start": self.start,
            "end": self.end,
            "probability": self.probability,
            "base": base,
            "library": base["library"],
        }


def _knoche_base() -> VLRPolicy:
    return VLRPolicy(1.0, BINARYFACENET_SIZES, "bicubic_aa", "bicubic_aa")


@dataclass(frozen=True)
class CrossResolutionPolicy:
    """Cross-resolution batch training (Knoche et al., docs/datasets.md): a fixed share of
    every batch is degraded by ``base`` (applied with probability 1), the rest stays HR.

    ``lr_mask(batch, seed, epoch, step)`` marks exactly ``round(share * batch)`` samples (Python
    ``round``: halves go to the even count), a pure function of ``(seed, epoch, step)``;
    ``apply_batch`` degrades them. ``apply(img, rng)`` (the per-sample protocol, for loaders that
    do not know a sample's batch position) degrades with probability ``share``, which gives the
    share in expectation only.
    """

    share: float = 0.5
    base: VLRPolicy | MassoliPolicy = field(default_factory=_knoche_base)

    def __post_init__(self):
        _check_probability(self.share)

    def lr_mask(self, batch_size: int, seed: int, epoch: int, step: int) -> np.ndarray:
        n_lr = round(self.share * batch_size)
        order = np.random.default_rng([seed, epoch, step, 0xC2]).permutation(batch_size)
        mask = np.zeros(batch_size, bool)
        mask[order[:n_lr]] = True
        return mask

    def apply_batch(self, imgs, seed: int, epoch: int, step: int):
        """``(images, r)`` for a batch: the LR samples of ``lr_mask`` degraded, ``r`` per sample.

        Sample ``i``'s draws come from ``default_rng([seed, epoch, step, i, 0xC3])``.
        """
        always = replace(self.base, probability=1.0)
        mask = self.lr_mask(len(imgs), seed, epoch, step)
        out, rs = [], np.zeros(len(imgs), np.int64)
        for i, img in enumerate(imgs):
            if mask[i]:
                img, rs[i] = always.apply(img, np.random.default_rng([seed, epoch, step, i, 0xC3]))
            out.append(img)
        return (np.stack(out) if isinstance(imgs, np.ndarray) else out), rs

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        if self.share > 0 and rng.uniform() < self.share:
            return replace(self.base, probability=1.0).apply(img, rng)
        return img, 0

    def policy_dict(self) -> dict:
        base = {k: v for k, v in self.base.policy_dict().items() if k != "probability"}
        return {"kind": "crossres", "share": self.share, "base": base, "library": base["library"]}


def _check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"VLR probability must be in [0, 1], got {p}")


_KEYS = {
    "fixed": {"probability", "sizes", "down", "up"},
    "massoli": {"probability", "exponents", "down", "up"},
    "curriculum": {"total_steps", "step", "start", "end", "base", "probability"},
    "crossres": {"share", "base"},
}


def policy_from_config(cfg: dict):
    """Build a policy from ``{"kind": "fixed"|"massoli"|"curriculum"|"crossres", ...}``.

    Keys are the policy's fields; ``base`` (curriculum, crossres) is a nested ``fixed`` or
    ``massoli`` config without ``probability`` (the outer policy sets it). ``library`` is accepted
    and ignored, and a curriculum's ``probability`` must equal the one its step implies, so a
    logged ``policy_dict()`` builds the same policy. Unknown keys raise ``ValueError``.
    """
    return _build(cfg, nested=False)


def _build(cfg: dict, nested: bool):
    if not isinstance(cfg, dict):
        raise ValueError(f"a VLR policy config must be a mapping, got {type(cfg).__name__}")
    cfg = {k: v for k, v in cfg.items() if k != "library"}
    kind = cfg.pop("kind", None)
    kinds = ("fixed", "massoli") if nested else tuple(_KEYS)
    if kind not in kinds:
        raise ValueError(f"VLR policy kind must be one of {list(kinds)}, got {kind!r}")
    allowed = _KEYS[kind] - ({"probability"} if nested else set())
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} for VLR policy kind {kind!r}; allowed: {sorted(allowed)}"
        )
    if nested:
        cfg["probability"] = 1.0
    if kind == "fixed":
        return VLRPolicy(**{**cfg, **({"sizes": tuple(cfg["sizes"])} if "sizes" in cfg else {})})
    if kind == "massoli":
        if "exponents" in cfg:
            cfg["exponents"] = tuple(cfg["exponents"])
        return MassoliPolicy(**cfg)
    if "base" in cfg:
        cfg["base"] = _build(cfg["base"], nested=True)
    if kind == "crossres":
        return CrossResolutionPolicy(**cfg)
    logged = cfg.pop("probability", None)
    if "total_steps" not in cfg:
        raise ValueError("a curriculum VLR policy needs 'total_steps'")
    policy = CurriculumPolicy(**cfg)
    if logged is not None and abs(logged - policy.probability) > 1e-9:
        raise ValueError(
            f"curriculum 'probability' {logged} disagrees with step {policy.step} "
            f"of {policy.total_steps} ({policy.probability})"
        )
    return policy
