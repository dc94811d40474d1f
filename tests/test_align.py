"""5-point (and 4-point) similarity alignment, estimate_norm, 68->5, and the face detector.

The London-set checks run only where ../shared is present (real photos; never in the repo).
"""

import cv2
import numpy as np
import pandas as pd
import pytest

from vlrface.align import (
    ARCFACE_TEMPLATE,
    align_face,
    detect_and_align,
    estimate_norm,
    landmarks_68_to_5,
    similarity_transform,
    template,
    transform_points,
)
from vlrface.data.synthetic import render_face
from vlrface.preprocess import load_rgb


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([rot, [[tx], [ty]]])


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(5, 2))
    truth = similarity(23.0, 1.7, -12.0, 40.0)
    np.testing.assert_allclose(
        similarity_transform(src, transform_points(src, truth)), truth, atol=1e-9
    )
    mirrored = src * [-1, 1]  # a reflection is not a similarity: best fit keeps det > 0
    assert np.linalg.det(similarity_transform(src, mirrored)[:, :2]) > 0


@pytest.mark.parametrize("angle,scale", [(0.0, 1.0), (17.0, 1.6), (-30.0, 2.3)])
def test_alignment_undoes_a_known_similarity(angle, scale):
    face = render_face(0, 3, 1)
    forward = similarity(angle, scale, 0.0, 0.0)
    forward[:, 2] = 200 - forward[:, :2] @ [56, 56]  # face centre to the canvas centre
    warped = cv2.warpAffine(face, forward, (400, 400), flags=cv2.INTER_CUBIC)
    landmarks = transform_points(ARCFACE_TEMPLATE, forward)
    back = estimate_norm(landmarks)
    assert np.abs(transform_points(landmarks, back) - ARCFACE_TEMPLATE).max() < 0.01
    aligned = align_face(warped, landmarks.ravel())  # flat x1, y1, ... as in manifests
    inner = (slice(8, 104), slice(8, 104))
    err = np.abs(aligned[inner].astype(float) - face[inner]).mean()
    assert err < 2.5, err  # two resamplings of the same face
    other = align_face(render_face(0, 4, 1), ARCFACE_TEMPLATE)
    assert np.abs(other[inner].astype(float) - face[inner]).mean() > 4 * err


def test_four_point_variant_matches_five_point_alignment():
    t4 = template(112, 4)
    np.testing.assert_allclose(t4[3], ARCFACE_TEMPLATE[3:].mean(axis=0))
    forward = similarity(-12.0, 0.8, 30.0, 50.0)
    points5 = transform_points(ARCFACE_TEMPLATE, forward)
    points4 = np.vstack([points5[:3], points5[3:].mean(axis=0)])
    np.testing.assert_allclose(estimate_norm(points4), estimate_norm(points5), atol=1e-9)
    assert np.abs(transform_points(points4, estimate_norm(points4)) - t4).max() < 0.01
    with pytest.raises(ValueError, match="5 or 4 points"):
        estimate_norm(points5[:3])


def test_estimate_norm_sizes():
    np.testing.assert_allclose(template(128), ARCFACE_TEMPLATE + [8.0, 0.0])
    np.testing.assert_allclose(template(224), ARCFACE_TEMPLATE * 2)
    np.testing.assert_allclose(template(256), ARCFACE_TEMPLATE * 2 + [16.0, 0.0])
    landmarks = transform_points(ARCFACE_TEMPLATE, similarity(5.0, 3.0, 10.0, 20.0))
    mapped = transform_points(landmarks, estimate_norm(landmarks, 128))
    assert np.abs(mapped - template(128)).max() < 0.01
    assert align_face(np.zeros((400, 400, 3), np.uint8), landmarks, 128).shape == (128, 128, 3)
    with pytest.raises(ValueError, match="multiple of 112 or 128"):
        template(100)


def test_68_to_5():
    points = np.arange(136, dtype=float).reshape(68, 2)
    five = landmarks_68_to_5(points.ravel())
    np.testing.assert_allclose(five[0], (points[36] + points[39]) / 2)
    np.testing.assert_allclose(five[1], (points[42] + points[45]) / 2)
    np.testing.assert_allclose(five[2:], points[[30, 48, 54]])
    with pytest.raises(ValueError, match="expected 68"):
        landmarks_68_to_5(points[:5])


# --- London set (../shared): real photos -------------------------------------------------
COLS = [
    "leye_x",
    "leye_y",
    "reye_x",
    "reye_y",
    "nose_x",
    "nose_y",
    "mouthl_x",
    "mouthl_y",
    "mouthr_x",
    "mouthr_y",
]
LONDON_IDS = ["001", "002", "003", "004"]


@pytest.fixture(scope="module")
def london(shared_dir):
    root = shared_dir / "data" / "london-set"
    df = pd.read_csv(root / "landmarks5_original.csv", dtype={"id": str})
    rows = df[df["id"].isin(LONDON_IDS) & (df["expression"] == "neutral")]
    return [
        (
            r["id"],
            r[COLS].to_numpy(float).reshape(5, 2),
            load_rgb(root / "crop256" / r["id"] / f"{r['id']}_neutral.jpg"),
            load_rgb(root / "aligned112" / r["id"] / f"{r['id']}_neutral.jpg"),
        )
        for _, r in rows.iterrows()
    ]


def crop_box(crop, aligned, original_to_aligned, landmarks):
    """The crop256 box (scale s, offset t: crop = s * original + t), by registering aligned112
    onto the crop (ECC, affine), then reading off the original -> crop map."""
    gray = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32)  # noqa: E731
    guess = np.array(
        [
            [0.29, 0, 128 - 0.29 * landmarks[:, 0].mean()],
            [0, 0.29, 131 - 0.29 * landmarks[:, 1].mean()],
            [0, 0, 1],
        ]
    )
    homog = np.vstack([original_to_aligned, [0, 0, 1]])
    warp = (guess @ np.linalg.inv(homog))[:2].astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)
    _, warp = cv2.findTransformECC(
        gray(aligned), gray(crop), warp, cv2.MOTION_AFFINE, criteria, None, 5
    )
    return warp.astype(float) @ homog


def test_london_alignment_reproduces_aligned112(london):
    for ident, landmarks, crop, aligned in london:
        matrix = estimate_norm(landmarks)
        # the producer used the same template: our similarity times an axis-aligned box
        box = crop_box(crop, aligned, matrix, landmarks)
        assert abs(box[0, 1]) + abs(box[1, 0]) + abs(box[0, 0] - box[1, 1]) < 0.01 * box[0, 0]
        in_crop = landmarks * (box[0, 0] + box[1, 1]) / 2 + box[:, 2]
        err = np.abs(align_face(crop, in_crop).astype(float) - aligned).mean()
        assert err < 6.0, (ident, err)  # measured 2.9-4.4 on these (mean abs, 0-255)


def test_london_detector_finds_annotated_landmarks(london):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from vlrface.align import DlibDetector

    detector = DlibDetector(upsample=1)
    for ident, landmarks, crop, aligned in london:
        in_aligned = transform_points(landmarks, estimate_norm(landmarks))
        faces = detector.detect(aligned)
        assert len(faces) == 1, ident
        eyes = np.linalg.norm(in_aligned[0] - in_aligned[1])
        nme = np.linalg.norm(faces[0].landmarks - in_aligned, axis=1).mean() / eyes
        assert nme < 0.06, (ident, nme)
        found = detect_and_align(crop, detector)
        assert found is not None, ident
        err = np.abs(found[0].astype(float) - aligned).mean()
        assert err < 15.0, (ident, err)
    assert detect_and_align(np.full((200, 200, 3), 128, np.uint8), detector) is None
