"""LFW reader on a tiny copy of the raw release (two person-disjoint sets, View 1 and View 2
files): manifest, pairs and people equal the fixture's ground truth; bad input is named (file
and line)."""

import shutil

import pandas as pd
import pytest

from vlrface.data import lfw
from vlrface.data.fixtures.lfw import write_lfw
from vlrface.data.records import MANIFEST_COLUMNS
from vlrface.errors import DataError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("lfw_ro")
    return root, write_lfw(root)


@pytest.fixture
def damaged(built, tmp_path):
    """A copy of the fixture that a test may damage, and its truth."""
    root = tmp_path / "lfw_rw"
    shutil.copytree(built[0], root)
    return root, built[1]


def _edit_pairs(root, lineno, text):
    lines = (root / "pairs.txt").read_text().splitlines()
    lines[lineno - 1] = text
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")


def test_manifest_equals_the_fixture(built):
    root, truth = built
    df = lfw.read_manifest(root, progress=False, pairs=root / "pairs.txt")
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    pd.testing.assert_frame_equal(df[list(truth["manifest"].columns)], truth["manifest"])
    assert set(df["source"]) == {"lfw"} and df["decodable"].all()
    assert df.attrs == {"pairs": 12, "skipped": 0, "skipped_examples": []}
    assert "lfw/Carlos_de_la_Fuente/Carlos_de_la_Fuente_0001.jpg" in set(df["path"])


def test_root_may_be_the_image_folder(built):
    root, truth = built
    df = lfw.read_manifest(root / "lfw", progress=False)
    assert df["path"].tolist() == truth["manifest"]["path"].str.removeprefix("lfw/").tolist()


def test_pairs_view2_and_view1(built):
    root, truth = built
    lines = (root / "pairs.txt").read_text().splitlines()
    assert lines[0] == "2\t3" and lines[1].count("\t") == 2 and lines[4].count("\t") == 3
    pairs = lfw.read_pairs(root)
    pd.testing.assert_frame_equal(pairs, truth["pairs"])
    assert pairs.groupby("fold")["same"].apply(list).tolist() == [[True] * 3 + [False] * 3] * 2
    dev = lfw.read_pairs(root, pairs=root / "pairsDevTrain.txt")
    pd.testing.assert_frame_equal(dev, truth["dev_pairs"])


def test_people_view2_and_view1(built):
    root, truth = built
    pd.testing.assert_frame_equal(lfw.read_people(root / "people.txt"), truth["people"])
    dev = lfw.read_people(root / "peopleDevTrain.txt")
    pd.testing.assert_frame_equal(dev, truth["dev_people"])
    counts = truth["manifest"].groupby("identity").size()
    assert dict(zip(truth["people"]["name"], truth["people"]["images"], strict=True)) == dict(
        counts
    )


def test_missing_pairs_file(built):
    root, _ = built
    with pytest.raises(DataError, match=r"pairsDevTest.txt: pairs file missing"):
        lfw.read_pairs(root, pairs=root / "pairsDevTest.txt")
    with pytest.raises(DataError, match=r"nope.txt: people file missing"):
        lfw.read_people(root / "nope.txt")


def test_pair_naming_an_unknown_image(damaged):
    root, truth = damaged
    _edit_pairs(root, 3, "Bea_Lindqvist\t1\t7")
    with pytest.raises(DataError, match=r"pairs.txt:3: names lfw/Bea_Lindqvist/Bea_Lindqvist_0007"):
        lfw.read_pairs(root)
    pairs = lfw.read_pairs(root, on_error="skip")
    assert len(pairs) == 11 and pairs.attrs["skipped"] == 1
    with pytest.raises(DataError, match=r"pairs.txt:3: names"):
        lfw.read_manifest(root, progress=False, pairs=root / "pairs.txt")


def test_pair_image_removed_from_disk(damaged):
    root, truth = damaged
    first = truth["pairs"].iloc[0]
    (root / first["path_a"]).unlink()
    with pytest.raises(DataError, match=rf"pairs.txt:2: names {first['path_a']}, which is not on"):
        lfw.read_pairs(root)


@pytest.mark.parametrize(
    "lineno, text, message",
    [
        (2, "Abel_Marsh\t1", r"pairs.txt:2: expected a matched pair 'name\\tn1\\tn2'"),
        (2, "Abel_Marsh\tone\t2", r"pairs.txt:2: expected a matched pair"),
        (5, "Abel_Marsh\t1\t2", r"pairs.txt:5: expected a mismatched pair"),
        (1, "2 three", r"pairs.txt:1: expected a header"),
    ],
)
def test_malformed_pairs_line(damaged, lineno, text, message):
    root, _ = damaged
    _edit_pairs(root, lineno, text)
    with pytest.raises(DataError, match=message):
        lfw.read_pairs(root)


def test_count_mismatch_with_header(damaged):
    root, _ = damaged
    _edit_pairs(root, 1, "2\t4")
    with pytest.raises(DataError, match=r"pairs.txt:1: header '2\\t4' promises .* = 16 pair lines"):
        lfw.read_pairs(root)
    people = root / "people.txt"
    people.write_text(people.read_text().replace("\n4\n", "\n5\n", 1))
    with pytest.raises(DataError, match=r"people.txt:7: expected 'name\\tnum_images'"):
        lfw.read_people(people)


def test_path_escaping_the_root(damaged, tmp_path):
    root, _ = damaged
    _edit_pairs(root, 2, "../../outside\t1\t2")
    with pytest.raises(DataError, match=r"pairs.txt:2: path .* escapes the dataset root"):
        lfw.read_pairs(root)
    outside = tmp_path / "elsewhere" / "Zed_Q"
    outside.mkdir(parents=True)
    shutil.copy(root / "lfw/Abel_Marsh/Abel_Marsh_0001.jpg", outside / "Zed_Q_0001.jpg")
    (root / "lfw" / "Zed_Q").symlink_to(outside)
    with pytest.raises(DataError, match=r"Zed_Q_0001.jpg' escapes the dataset root"):
        lfw.read_manifest(root, progress=False)


def test_bad_images_raise_or_skip(damaged):
    root, truth = damaged
    bad = root / "lfw/Goran_Ivic/Goran_Ivic_0002.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    (root / "lfw/Goran_Ivic/Goran_Ivic.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"Goran_Ivic.txt: not an LFW image name"):
        lfw.read_manifest(root, progress=False)
    df = lfw.read_manifest(root, on_error="skip", progress=False, pairs=root / "pairs.txt")
    assert len(df) == len(truth["manifest"]) - 1
    bad_pairs = truth["pairs"][["path_a", "path_b"]].isin([bad.relative_to(root).as_posix()])
    assert df.attrs["skipped"] == 2 + bad_pairs.any(axis=1).sum()  # name, decode, its pairs
    (root / "lfw/Goran_Ivic/Goran_Ivic.txt").unlink()
    with pytest.raises(DataError, match=r"Goran_Ivic_0002.jpg: image does not decode"):
        lfw.read_manifest(root, progress=False)
