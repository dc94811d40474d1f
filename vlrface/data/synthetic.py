"""Deterministic synthetic face set: the project's embedded demo data.

No real face set may be shipped, so the demo renders its own faces. Each identity draws a fixed
face geometry (face oval, eye spacing, nose, mouth, brows), colours (skin, iris, hair, lips) and
a skin texture with marks; each image of it draws a pose (yaw, pitch, roll, scale, shift), an
expression (smile, brow raise, eye openness), a lighting field, a background, blur, sensor noise
and a JPEG quality. Faces are rendered at 2x and area-reduced to 112x112, with the eyes, nose tip
and mouth corners near the ArcFace 5-point template, so the images look "aligned" like a
112x112 insightface pack.

The set is written in CASIA-WebFace's release layout, ``<7-digit id>/<3-digit n>.jpg`` with a
``names.txt`` (``"<id> <Name>"`` per line), so the real CASIA reader reads it. A ``SYNTHETIC.md``
beside the identity folders labels it, and every report that uses it says so.

Everything is a pure function of ``(seed, identity, image index)``: the same seed writes the same
bytes, whatever the number of identities or the order they are written in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SIZE = 112
_SS = 2  # supersampling factor of the renderer
SYNTHETIC_MARKER = "SYNTHETIC.md"

_SKIN_LIGHT = np.array([228.0, 196.0, 172.0])
_SKIN_DARK = np.array([92.0, 62.0, 46.0])
_HAIR = np.array(
    [[25, 22, 20], [60, 40, 28], [110, 75, 45], [190, 160, 105], [150, 70, 35], [165, 165, 160]],
    dtype=np.float64,
)
_IRIS = np.array(
    [[60, 40, 25], [95, 65, 35], [70, 110, 160], [80, 120, 80], [110, 110, 115]], dtype=np.float64
)


@dataclass(frozen=True)
class Identity:
    """The fixed traits of one synthetic person (112x112 coordinates, RGB colours)."""

    skin: np.ndarray
    face_w: float
    face_h: float
    jaw: float
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h: float
    iris: np.ndarray
    brow_gap: float
    brow_thick: float
    brow_slant: float
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_thick: float
    lip: np.ndarray
    hair: np.ndarray
    hairline: float
    hair_style: int  # 0 short, 1 long, 2 receding, 3 fringe
    beard: bool
    glasses: bool
    marks: np.ndarray  # (k, 3): x, y, radius
    texture: np.ndarray  # (8, 8) low-frequency skin texture in [-1, 1]


def identity_traits(seed: int, identity: int) -> Identity:
    """Draw the traits of ``identity`` under ``seed`` (independent of every other identity)."""
    rng = np.random.default_rng([seed, identity, 0x1D])
    t = rng.uniform(0.0, 1.0)
    skin = (1 - t) * _SKIN_LIGHT + t * _SKIN_DARK + rng.normal(0, 6, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] + rng.normal(0, 8, 3)
    n_marks = int(rng.integers(0, 4))
    marks = np.column_stack(
        [
            rng.uniform(30, 82, n_marks),
            rng.uniform(45, 100, n_marks),
            rng.uniform(0.8, 1.8, n_marks),
        ]
    )
    return Identity(
        skin=np.clip(skin, 30, 250),
        face_w=rng.uniform(31, 40),
        face_h=rng.uniform(42, 52),
        jaw=rng.uniform(0.55, 0.95),
        eye_y=rng.uniform(48.5, 54.5),
        eye_dx=rng.uniform(14.5, 21.0),
        eye_w=rng.uniform(5.0, 8.0),
        eye_h=rng.uniform(2.2, 3.6),
        iris=_IRIS[rng.integers(len(_IRIS))] + rng.normal(0, 6, 3),
        brow_gap=rng.uniform(5.0, 9.0),
        brow_thick=rng.uniform(1.2, 3.4),
        brow_slant=rng.uniform(-0.35, 0.35),
        nose_y=rng.uniform(67.0, 76.0),
        nose_w=rng.uniform(5.5, 11.5),
        mouth_y=rng.uniform(86.0, 95.0),
        mouth_w=rng.uniform(10.0, 17.5),
        lip_thick=rng.uniform(1.6, 4.0),
        lip=np.clip(skin * rng.uniform(0.55, 0.85) + np.array([40.0, 0.0, 5.0]), 20, 250),
        hair=np.clip(hair, 5, 250),
        hairline=rng.uniform(18.0, 36.0),
        hair_style=int(rng.integers(4)),
        beard=bool(rng.uniform() < 0.2),
        glasses=bool(rng.uniform() < 0.15),
        marks=marks,
        texture=rng.uniform(-1, 1, (8, 8)),
    )


def _pt(x: float, y: float) -> tuple[int, int]:
    """A 112-space point as an integer point of the supersampled canvas (4 fractional bits)."""
    return (round(x * _SS * 16), round(y * _SS * 16))


def _len(v: float) -> int:
    return max(1, round(v * _SS * 16))


def _ellipse(img, cx, cy, ax, ay, angle, color, thick=-1, start=0, end=360):
    t = thick if thick < 0 else max(1, round(thick * _SS))
    cv2.ellipse(
        img,
        _pt(cx, cy),
        (_len(ax), _len(ay)),
        angle,
        start,
        end,
        tuple(float(c) for c in color),
        t,
        cv2.LINE_AA,
        4,
    )


def _line(img, p, q, color, thick):
    cv2.line(
        img,
        _pt(*p),
        _pt(*q),
        tuple(float(c) for c in color),
        max(1, round(thick * _SS)),
        cv2.LINE_AA,
        4,
    )


def render_face(seed: int, identity: int, index: int) -> np.ndarray:
    """Render image ``index`` of ``identity``: a 112x112x3 uint8 RGB array."""
    ident = identity_traits(seed, identity)
    rng = np.random.default_rng([seed, identity, index, 0x1F])
    n = SIZE * _SS

    # Per-image nuisance: pose, expression, lighting, background, blur, noise.
    yaw = rng.uniform(-0.28, 0.28)
    pitch = rng.uniform(-2.0, 2.0)
    roll = rng.uniform(-9.0, 9.0)
    scale = rng.uniform(0.93, 1.07)
    shift = rng.uniform(-3.0, 3.0, 2)
    smile = rng.uniform(-0.3, 1.0)
    brow_raise = rng.uniform(-1.0, 2.0)
    eye_open = 0.15 if rng.uniform() < 0.05 else rng.uniform(0.65, 1.1)

    bg_a = rng.uniform(20, 235, 3)
    bg_b = rng.uniform(20, 235, 3)
    ramp = np.linspace(0.0, 1.0, n)[:, None, None]
    img = (bg_a * (1 - ramp) + bg_b * ramp) * np.ones((n, n, 3))

    cx = 56.0 + yaw * 4.0
    face_cy = 62.0 + pitch * 0.5
    ix = lambda x, depth=1.0: x + yaw * 9.0 * depth  # noqa: E731 - feature x under yaw

    # Hair behind the head (long styles), then the face oval and jaw.
    if ident.hair_style == 1:
        _ellipse(img, cx, face_cy + 8, ident.face_w + 7, ident.face_h + 12, 0, ident.hair)
    _ellipse(img, cx, face_cy, ident.face_w * (1 - abs(yaw) * 0.25), ident.face_h, 0, ident.skin)
    jaw_w = ident.face_w * ident.jaw
    _ellipse(img, cx, face_cy + ident.face_h * 0.35, jaw_w, ident.face_h * 0.62, 0, ident.skin)
    # Ears.
    for side in (-1, 1):
        ex = cx + side * ident.face_w * (1 - abs(yaw) * 0.25) - side * 1.5
        _ellipse(img, ex, ident.eye_y + 6, 3.5, 7.5, 0, ident.skin * 0.92)

    # Hair on top.
    top = face_cy - ident.face_h
    if ident.hair_style != 2:
        _ellipse(
            img,
            cx,
            top + (ident.hairline - top) * 0.55,
            ident.face_w + 2,
            (ident.hairline - top) * 0.9 + 6,
            0,
            ident.hair,
            start=180,
            end=360,
        )
    else:
        _ellipse(img, cx, top + 4, ident.face_w * 0.8, 8, 0, ident.hair, start=180, end=360)
    if ident.hair_style == 3:
        _ellipse(img, cx - 6, ident.hairline + 2, ident.face_w * 0.8, 7, 12, ident.hair)

    # Skin texture and marks.
    tex = cv2.resize(ident.texture, (n, n), interpolation=cv2.INTER_CUBIC)[..., None]
    face_mask = np.all(np.abs(img - ident.skin) < 1.0, axis=2, keepdims=True)
    img = np.where(face_mask, img + tex * 9.0, img)
    for mx, my, mr in ident.marks:
        _ellipse(img, ix(mx), my, mr, mr, 0, ident.skin * 0.55)
    if ident.beard:
        _ellipse(
            img,
            cx,
            ident.mouth_y + 4,
            jaw_w * 0.8,
            11,
            0,
            ident.hair * 0.9 + ident.skin * 0.1,
            start=0,
            end=180,
        )

    # Eyes, brows.
    for side in (-1, 1):
        ex = ix(56.0 + side * ident.eye_dx)
        ey = ident.eye_y + pitch
        eh = max(0.4, ident.eye_h * eye_open)
        _ellipse(img, ex, ey, ident.eye_w, eh, 0, (245, 245, 240))
        _ellipse(img, ex + yaw * 2, ey, min(eh, 2.6), min(eh, 2.6), 0, ident.iris)
        _ellipse(img, ex + yaw * 2, ey, 1.0, min(eh, 1.0), 0, (10, 10, 10))
        _ellipse(img, ex, ey, ident.eye_w, eh, 0, ident.skin * 0.5, thick=0.6)
        by = ey - ident.brow_gap - brow_raise
        slant = side * ident.brow_slant * ident.eye_w
        _line(
            img,
            (ex - ident.eye_w, by + slant),
            (ex + ident.eye_w, by - slant),
            ident.hair * 0.8,
            ident.brow_thick,
        )
        if ident.glasses:
            _ellipse(img, ex, ey, ident.eye_w + 3.5, ident.eye_w + 1.5, 0, (30, 30, 30), thick=1.0)
    if ident.glasses:
        _line(
            img,
            (ix(56.0 - ident.eye_dx + ident.eye_w + 3.5), ident.eye_y + pitch),
            (ix(56.0 + ident.eye_dx - ident.eye_w - 3.5), ident.eye_y + pitch),
            (30, 30, 30),
            1.0,
        )

    # Nose: bridge shadow and nostrils.
    ny = ident.nose_y + pitch
    _line(img, (ix(56.0, 1.3), ident.eye_y + 4), (ix(56.0, 1.6), ny - 2), ident.skin * 0.8, 1.4)
    for side in (-1, 1):
        _ellipse(
            img, ix(56.0 + side * ident.nose_w * 0.45, 1.5), ny, 2.0, 1.3, 0, ident.skin * 0.45
        )

    # Mouth: curvature follows the smile, openness the smile too.
    my = ident.mouth_y + pitch
    curve = smile * 4.0
    left, right = ix(56.0 - ident.mouth_w), ix(56.0 + ident.mouth_w)
    _ellipse(
        img,
        (left + right) / 2,
        my - curve * 0.3,
        ident.mouth_w,
        ident.lip_thick + max(0, smile) * 2,
        0,
        ident.lip,
    )
    if smile > 0.5:
        _ellipse(
            img,
            (left + right) / 2,
            my - curve * 0.3,
            ident.mouth_w * 0.8,
            smile * 1.6,
            0,
            (235, 230, 225),
        )
    _line(img, (left, my - curve), ((left + right) / 2, my), ident.lip * 0.6, 0.8)
    _line(img, ((left + right) / 2, my), (right, my - curve), ident.lip * 0.6, 0.8)

    # Lighting: a directional ramp times a global gain, with a colour cast.
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:n, 0:n] / n - 0.5
    light = 1.0 + rng.uniform(0.0, 0.4) * (np.cos(ang) * xx + np.sin(ang) * yy)
    img = img * light[..., None] * rng.uniform(0.75, 1.2) * rng.uniform(0.92, 1.08, 3)

    # Pose in the image plane: roll, scale and shift about the face centre.
    m = cv2.getRotationMatrix2D((56.0 * _SS, 62.0 * _SS), roll, scale)
    m[:, 2] += shift * _SS
    img = cv2.warpAffine(
        np.clip(img, 0, 255).astype(np.float32),
        m,
        (n, n),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )
    img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)

    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.25:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.normal(0.0, rng.uniform(0.0, 6.0), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def jpeg_quality(seed: int, identity: int, index: int) -> int:
    """The JPEG quality image ``index`` of ``identity`` is saved with (75-95)."""
    return int(np.random.default_rng([seed, identity, index, 0x2F]).integers(75, 96))


def casia_id(identity: int) -> str:
    """CASIA-WebFace's folder name for a 0-based synthetic identity: 7 digits."""
    return f"{identity + 1:07d}"


def write_casia_layout(
    root: str | Path,
    identities: int,
    images_per_identity: int,
    seed: int,
    progress: bool = True,
) -> Path:
    """Write the synthetic set under ``root`` in CASIA-WebFace's layout and return ``root``.

    ``root/<7-digit id>/<NNN>.jpg`` (1-based, 3 digits), ``root/names.txt`` and
    ``root/SYNTHETIC.md``. Existing files of the same name are overwritten; nothing else under
    ``root`` is touched.
    """
    if identities < 2 or images_per_identity < 2:
        raise ValueError(
            f"a synthetic set needs >= 2 identities and >= 2 images each, got {identities} x "
            f"{images_per_identity}"
        )
    from vlrface.progress import tqdm

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    bar = tqdm(
        total=identities * images_per_identity,
        desc="synthetic faces",
        unit="img",
        disable=not progress,
    )
    for ident in range(identities):
        folder = root / casia_id(ident)
        folder.mkdir(exist_ok=True)
        names.append(f"{casia_id(ident)} Synthetic_Person_{ident + 1:05d}")
        for k in range(images_per_identity):
            rgb = render_face(seed, ident, k)
            ok, buf = cv2.imencode(
                ".jpg",
                cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality(seed, ident, k)],
            )
            if not ok:  # pragma: no cover - cv2 failing to encode a valid array
                raise RuntimeError(f"could not encode {folder / f'{k + 1:03d}.jpg'}")
            (folder / f"{k + 1:03d}.jpg").write_bytes(buf.tobytes())
            bar.update()
    bar.close()
    (root / "names.txt").write_text("\n".join(names) + "\n")
    (root / SYNTHETIC_MARKER).write_text(
        "# Synthetic faces (vlrface demo data)\n\n"
        "Rendered by `vlrface.data.synthetic` "
        f"(seed {seed}, {identities} identities x {images_per_identity} images, 112x112 JPEG).\n"
        "No real person is depicted. Written in CASIA-WebFace's layout so the CASIA reader runs.\n"
        "Metrics measured on this set describe the synthetic task only.\n"
    )
    return root
