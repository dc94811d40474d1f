"""The synthetic demo set: deterministic, identity-consistent, in CASIA-WebFace's layout."""

import numpy as np

from vlrface.data import casia
from vlrface.data.synthetic import SYNTHETIC_MARKER, render_face, write_casia_layout


def test_render_is_deterministic_for_a_seed():
    a, b = render_face(7, 3, 2), render_face(7, 3, 2)
    assert a.shape == (112, 112, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_face(8, 3, 2))  # another seed, another face


def test_images_vary_within_an_identity_less_than_across():
    same = [np.abs(render_face(0, 1, 0).astype(int) - render_face(0, 1, k)).mean() for k in (1, 2)]
    assert min(same) > 1.0  # per-image pose/lighting/noise
    # faces of one identity stay closer at low resolution than faces of others, on average
    import cv2

    small = lambda i, k: cv2.resize(render_face(0, i, k), (14, 14), interpolation=cv2.INTER_AREA)
    within = np.mean([np.abs(small(i, 0).astype(int) - small(i, 1)).mean() for i in range(8)])
    across = np.mean([np.abs(small(i, 0).astype(int) - small(i + 1, 0)).mean() for i in range(8)])
    assert within < across


def test_written_set_is_byte_identical_and_in_casia_layout(tmp_path):
    a = write_casia_layout(tmp_path / "a", 3, 2, seed=5, progress=False)
    b = write_casia_layout(tmp_path / "b", 3, 2, seed=5, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert [str(f) for f in files] == [f"000000{i}/00{k}.jpg" for i in (1, 2, 3) for k in (1, 2)]
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert (a / "names.txt").read_text().splitlines()[0] == "0000001 Synthetic_Person_00001"
    assert "Synthetic" in (a / SYNTHETIC_MARKER).read_text()
    manifest = casia.read_manifest(a, test_fraction=0.5, seed=0, progress=False)
    assert len(manifest) == 6 and manifest.decodable.all()
    assert set(manifest.width) == {112} and set(manifest.channels) == {3}
