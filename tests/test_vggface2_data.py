"""VGGFace2 reader against the release-layout fixture, and each kind of bad input."""

from pathlib import Path

import numpy as np
import pytest

from vlrface.align import align_face, estimate_norm, template, transform_points
from vlrface.data import vggface2
from vlrface.data.fixtures.vggface2 import MALFORMED_NAME, write_vggface2
from vlrface.data.records import DataError
from vlrface.preprocess import load_rgb


@pytest.fixture()
def root(tmp_path) -> tuple[Path, object]:
    return tmp_path, write_vggface2(tmp_path)


def read(path, **kw):
    return vggface2.read_manifest(path, progress=False, pose_template_size=2, **kw)


def test_reader_equals_ground_truth(root):
    path, truth = root
    df = read(path)
    cols = [
        "path",
        "identity",
        "split",
        "name",
        "gender",
        "bbox",
        "landmarks",
        "pose",
        "width",
        "height",
    ]
    assert df[cols].to_dict("records") == truth[cols].to_dict("records")
    assert set(df["split"]) == {"train", "test"}
    assert MALFORMED_NAME in set(df["name"])  # the unquoted-comma row was re-joined
    assert df["decodable"].all() and df.attrs["skipped"] == 0


def test_landmarks_align_the_loose_crop(root):
    path, truth = root
    row = truth.iloc[0]
    points = np.array(row["landmarks"]).reshape(5, 2)
    assert np.abs(transform_points(points, estimate_norm(points)) - template()).max() < 0.05
    assert align_face(load_rgb(path / row["path"]), points).shape == (112, 112, 3)


def test_meta_txt_lists_and_walk_without_lists(root):
    path, truth = root
    (path / "meta" / "train.txt").write_text((path / "train_list.txt").read_text())
    (path / "train_list.txt").unlink()
    (path / "test_list.txt").unlink()
    assert read(path)["path"].tolist() == truth["path"].tolist()


def test_missing_listed_file_names_list_and_line(root):
    path, truth = root
    (path / "train" / truth[truth.split == "train"].iloc[1]["path"].split("/", 1)[1]).unlink()
    missing = truth[truth.split == "train"].iloc[1]["path"]
    line = (path / "train_list.txt").read_text().splitlines().index(missing[6:]) + 1
    with pytest.raises(DataError, match=rf"train_list.txt:{line}: listed image {missing}"):
        read(path)
    df = read(path, on_error="skip")
    assert missing not in set(df["path"]) and df.attrs["skipped"] >= 1


def test_landmark_row_for_unknown_image(root):
    path, _ = root
    csv = path / "bb_landmark" / "loose_landmark_test.csv"
    csv.write_text(csv.read_text() + '"n000009/0001_01",' + ",".join(["1.0"] * 10) + "\n")
    n = len(csv.read_text().splitlines())
    with pytest.raises(DataError, match=rf"loose_landmark_test.csv:{n}: .*unknown image"):
        read(path)


def test_unrepairable_rows(root):
    path, _ = root
    meta = path / "meta" / "identity_meta.csv"
    meta.write_text(meta.read_text() + "n000010, Broken\n")
    n = len(meta.read_text().splitlines())
    with pytest.raises(DataError, match=rf"identity_meta.csv:{n}:"):
        read(path)
    meta.write_text("\n".join(meta.read_text().splitlines()[:-1]) + "\n")
    bb = path / "bb_landmark" / "loose_bb_train.csv"
    bb.write_text(bb.read_text() + '"n000002/0001_01",1,2,x,4\n')
    with pytest.raises(DataError, match=r"loose_bb_train.csv:\d+: expected NAME_ID and 4"):
        read(path)


def test_without_side_files_columns_are_left_out(tmp_path):
    write_vggface2(tmp_path, pose_templates=False)
    for side in ("meta", "bb_landmark"):
        for f in (tmp_path / side).iterdir():
            f.unlink()
    df = read(tmp_path)
    assert not {"name", "bbox", "landmarks", "pose"} & set(df.columns)
    assert len(df) == 15
