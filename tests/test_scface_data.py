"""SCface reader and protocols on tiny fixtures in the release layout (52 subjects, cams 1, 2
and 6 at three distances, cam8, the flat copy; 8 subjects where a test damages it): output
equals the ground truth; bad input is named."""

import shutil

import pandas as pd
import pytest

from vlrface.data import scface
from vlrface.data.fixtures.scface import write_scface
from vlrface.data.records import MANIFEST_COLUMNS
from vlrface.errors import DataError

SUBJECTS, VISIBLE_CAMS = 52, 2  # the fixture's defaults: cams (1, 2, 6)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("scface")
    return root, write_scface(root)


@pytest.fixture(scope="module")
def manifest(src):
    return scface.read_manifest(src[0], progress=False)


@pytest.fixture
def small(tmp_path):
    """A small fixture (8 subjects) that a test may damage, and its truth."""
    return tmp_path / "scface", write_scface(tmp_path / "scface", subjects=8)


def test_reader_matches_the_fixture_without_double_counting(src, manifest):
    root, truth = src
    assert len(list((root / "surveillance_cameras_all").iterdir())) == SUBJECTS * 10
    pd.testing.assert_frame_equal(manifest[list(truth.columns)], truth, check_dtype=False)
    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert manifest.attrs["skipped"] == 0 and manifest["decodable"].all()
    assert not manifest["path"].str.startswith("surveillance_cameras_all").any()
    by_camera = manifest.groupby("camera")["distance"].agg(lambda d: sorted(set(d)))
    assert by_camera.to_dict() == {
        "mugshot": [0],
        "cam1": [1, 2, 3],
        "cam2": [1, 2, 3],
        "cam6": [1, 2, 3],
        "cam8": [0],
    }
    night = manifest.groupby("camera")["day_night"].first().to_dict()
    assert night == {
        "mugshot": "day",
        "cam1": "day",
        "cam2": "day",
        "cam6": "night",
        "cam8": "night",
    }
    assert manifest["landmarks4"].map(len).eq(8).all()  # 4 points, not the 5-point template
    assert manifest.loc[0, "path"] == "mugshot_frontal_cropped_all/001_frontal.JPG"


def test_flat_folder_alone_is_read(small):
    root, truth = small
    for tree in root.glob("surveillance_cameras_[Id]*"):
        shutil.rmtree(tree)
    df = scface.read_manifest(root, progress=False)
    assert len(df) == len(truth)
    flat = df[df["split"] == "surveillance"]
    assert flat["path"].str.startswith("surveillance_cameras_all/").all()
    expected = truth[truth["split"] == "surveillance"].assign(
        path=lambda t: "surveillance_cameras_all/" + t["path"].str.rsplit("/", n=1).str[1]
    )
    columns = ["path", "identity", "camera", "distance", "day_night", "width", "landmarks4"]
    pd.testing.assert_frame_equal(
        flat[columns].sort_values("path", ignore_index=True),
        expected[columns].sort_values("path", ignore_index=True),
    )


def test_protocol_50_80(manifest):
    p = scface.protocol_50_80(manifest)
    assert sorted(set(p.train["identity"].astype(int))) == list(range(1, 51))
    assert set(p.train["camera"]) == {"mugshot", "cam1", "cam2"}  # no IR in fine-tuning
    assert len(p.train) == 50 * (1 + 3 * VISIBLE_CAMS)
    assert p.gallery["identity"].tolist() == ["051", "052"]
    assert (p.gallery["camera"] == "mugshot").all()
    for d in (1, 2, 3):
        probes = p.probes[d]
        assert len(probes) == 2 * VISIBLE_CAMS and set(probes["distance"]) == {d}
        assert set(probes["camera"]) == {"cam1", "cam2"}
        assert set(probes["identity"]) == {"051", "052"}
    p40 = scface.protocol_50_80(manifest, n_train=40)
    assert len(p40.gallery) == 12 and len(p40.probes[3]) == 12 * VISIBLE_CAMS


def test_protocol_all_subjects_without_fine_tuning(manifest):
    p = scface.protocol_all(manifest)
    assert p.train.empty and len(p.gallery) == SUBJECTS
    assert {d: len(v) for d, v in p.probes.items()} == {
        d: SUBJECTS * VISIBLE_CAMS for d in (1, 2, 3)
    }
    no_mugshot = manifest[manifest["path"] != "mugshot_frontal_cropped_all/052_frontal.JPG"]
    with pytest.raises(DataError, match="test subject\\(s\\) 052 have no frontal mugshot"):
        scface.protocol_all(no_mugshot)


def test_image_not_fitting_its_folder_and_corrupt_jpeg(small):
    root, truth = small
    cam1 = root / "surveillance_cameras_distance_1/cam_1"
    (cam1 / "003_cam1_1.jpg").rename(cam1 / "003_cam2_1.jpg")
    bad = root / "surveillance_cameras_IR_cam8/007_cam8.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match=r"cam_1/003_cam2_1\.jpg: not an SCface image name for"):
        scface.read_manifest(root, progress=False)
    df = scface.read_manifest(root, progress=False, on_error="skip")
    assert df.attrs["skipped"] == 2 and len(df) == len(truth) - 1
    assert any("007_cam8.jpg: image does not decode" in m for m in df.attrs["skipped_examples"])
    # the flat copy stands in for a structured image that is missing
    assert "surveillance_cameras_all/003_cam1_1.jpg" in set(df["path"])


def test_malformed_side_files_are_named_by_line(small):
    root, _ = small
    features = root / "features.txt"
    lines = features.read_text().splitlines()
    features.write_text("\n".join(lines[:12] + ["13\t01.01.1970\tx\t0\t0\t0"] + lines[13:]))
    with pytest.raises(DataError, match=r"features\.txt:13: expected 'id<TAB>dd\.mm\.yyyy"):
        scface.read_manifest(root, progress=False)
    features.write_text("\n".join(lines))
    annotations = root / "scface_annotations.txt"
    lines = annotations.read_text().splitlines()
    annotations.write_text("\n".join(["# name x y", *lines[:4], "001_cam1_1 1 2 3", *lines[4:]]))
    with pytest.raises(DataError, match=r"scface_annotations\.txt:6: expected '<name> x_re"):
        scface.read_manifest(root, progress=False)
    annotations.write_text("\n".join(["# name x y", *lines, lines[0]]))
    with pytest.raises(DataError, match=r"scface_annotations\.txt:\d+: second annotation for"):
        scface.read_manifest(root, progress=False)
    annotations.write_text("\n".join(lines))
    elsewhere = annotations.rename(root.parent / "landmarks.txt")
    df = scface.read_manifest(root, progress=False, annotations=elsewhere)
    assert df["landmarks4"].notna().all()
    with pytest.raises(DataError, match=r"nowhere\.txt: file missing"):
        scface.read_manifest(root, progress=False, features=root / "nowhere.txt")
    features.unlink()
    df = scface.read_manifest(root, progress=False)
    assert "landmarks4" not in df and "gender" not in df
