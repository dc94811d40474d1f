"""QMUL-TinyFace and QMUL-SurvFace readers, and the combined training set, on tiny fixtures in
the official layouts: output equals the fixture's ground truth; every bad input is named."""

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.io import loadmat, savemat

from vlrface.data import survface, tinyface
from vlrface.data.combine import combine_identities
from vlrface.data.fixtures.survface import write_survface
from vlrface.data.fixtures.tinyface import cells, ids, write_tinyface
from vlrface.data.records import MANIFEST_COLUMNS, label_map
from vlrface.errors import DataError

PROBE_MAT = "Testing_Set/probe_img_ID_pairs.mat"
GALLERY_MAT = "Testing_Set/gallery_match_img_ID_pairs.mat"
POS_MAT = "Face_Verification_Test_Set/positive_pairs_names.mat"
MATED_MAT = "Face_Identification_Test_Set/mated_probe_img_ID_pairs.mat"


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinyface")
    return root, write_tinyface(root)


@pytest.fixture(scope="module")
def surv_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("survface")
    return root, write_survface(root)


@pytest.fixture
def tiny(tiny_src, tmp_path):
    """A private copy of the TinyFace fixture that a test may damage, and its truth."""
    shutil.copytree(tiny_src[0], tmp_path / "tinyface")
    return tmp_path / "tinyface", tiny_src[1]


@pytest.fixture
def surv(surv_src, tmp_path):
    shutil.copytree(surv_src[0], tmp_path / "survface")
    return tmp_path / "survface", surv_src[1]


def write_list(path, names, pids, prefix):
    savemat(path, {f"{prefix}_set": cells(names), f"{prefix}_ids": ids(pids)})


def read_list(path, prefix):
    mat = loadmat(path)
    return [c[0].item() for c in mat[f"{prefix}_set"]], mat[f"{prefix}_ids"].ravel().tolist()


def positive_names(truth):
    """The positive pairs of the SurvFace truth as file names, in .mat order."""
    positives = truth.pairs[truth.pairs["same"]]
    return [
        (a.rsplit("/")[-1], b.rsplit("/")[-1])
        for a, b in zip(positives["path_a"], positives["path_b"], strict=True)
    ]


def expect_equal(df, truth):
    pd.testing.assert_frame_equal(df[list(truth.columns)], truth, check_dtype=False)


# --- TinyFace -------------------------------------------------------------------------------


def test_tinyface_reader_matches_the_fixture(tiny_src):
    root, truth = tiny_src
    df = tinyface.read_manifest(root, progress=False)
    expect_equal(df, truth)
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert set(df["split"]) == {"train", "probe", "gallery", "distractor"}
    assert (df["source"] == "tinyface").all() and df["decodable"].all()
    assert df.attrs["skipped"] == 0
    row = df.iloc[0]
    assert row["sha256"] == hashlib.sha256((root / row["path"]).read_bytes()).hexdigest()
    assert row["size_bytes"] == (root / row["path"]).stat().st_size
    assert (df["width"] <= 40).all() and (df["height"] >= 16).all()  # native low resolution
    # the protocol order is the .mat order, which the fixture shuffled away from path order
    names, pids = read_list(root / PROBE_MAT, "probe")
    probes = df[df["split"] == "probe"].sort_values("protocol_index")
    assert [p.rsplit("/", 1)[1] for p in probes["path"]] == names
    assert probes["identity"].tolist() == [str(int(p)) for p in pids]
    assert names != sorted(names)
    assert (df.loc[df["split"] == "distractor", "identity"] == "").all()


def test_tinyface_mat_files_in_the_evaluation_folder_or_given(tmp_path):
    truth = write_tinyface(tmp_path / "t", mat_folder="Face_Identification_Evaluation")
    expect_equal(tinyface.read_manifest(tmp_path / "t", progress=False), truth)
    for mat in ("probe_img_ID_pairs.mat", "gallery_match_img_ID_pairs.mat"):
        (tmp_path / "t" / "Face_Identification_Evaluation" / mat).rename(tmp_path / mat)
    df = tinyface.read_manifest(
        tmp_path / "t",
        progress=False,
        probe_mat=tmp_path / "probe_img_ID_pairs.mat",
        gallery_mat=tmp_path / "gallery_match_img_ID_pairs.mat",
    )
    expect_equal(df, truth)
    only = tinyface.read_manifest(tmp_path / "t", progress=False, splits=["train"])
    assert set(only["split"]) == {"train"}
    with pytest.raises(ValueError, match="unknown split"):
        tinyface.read_manifest(tmp_path / "t", splits=["test"])


def test_tinyface_missing_or_wrong_mat_is_named(tiny):
    root, _ = tiny
    (root / PROBE_MAT).unlink()
    with pytest.raises(DataError, match=r"probe_img_ID_pairs\.mat: protocol file missing"):
        tinyface.read_manifest(root, progress=False, on_error="skip")
    savemat(root / PROBE_MAT, {"probes": cells(["5_1.jpg"]), "probe_ids": ids([5])})
    with pytest.raises(DataError, match=r"probe_img_ID_pairs\.mat: expected variables probe_set"):
        tinyface.read_manifest(root, progress=False)
    (root / PROBE_MAT).write_bytes(b"not a mat file")
    with pytest.raises(DataError, match=r"probe_img_ID_pairs\.mat: not a readable MATLAB"):
        tinyface.read_manifest(root, progress=False)
    savemat(root / PROBE_MAT, {"probe_set": cells(["5_1.jpg"]), "probe_ids": ids([5, 12])})
    with pytest.raises(DataError, match=r"probe_set has 1 entries but probe_ids 2"):
        tinyface.read_manifest(root, progress=False)


def test_tinyface_unknown_file_in_a_protocol_list(tiny):
    root, truth = tiny
    names, pids = read_list(root / GALLERY_MAT, "gallery")
    write_list(root / GALLERY_MAT, [*names, "77_1.jpg"], [*pids, 77], "gallery")
    row = len(names) + 1
    with pytest.raises(
        DataError, match=rf"gallery_match_img_ID_pairs\.mat: row {row} .*unknown file in a protocol"
    ):
        tinyface.read_manifest(root, progress=False)
    df = tinyface.read_manifest(root, progress=False, on_error="skip")
    assert df.attrs["skipped"] == 1 and "77_1.jpg" in df.attrs["skipped_examples"][0]
    expect_equal(df, truth)


def test_tinyface_id_disagreeing_with_the_filename_and_duplicates(tiny):
    root, truth = tiny
    names, pids = read_list(root / PROBE_MAT, "probe")
    write_list(root / PROBE_MAT, names, [pids[0] + 1, *pids[1:]], "probe")
    with pytest.raises(DataError, match=r"row 1 .*id \d+ disagrees with the filename prefix"):
        tinyface.read_manifest(root, progress=False)
    write_list(root / PROBE_MAT, [*names, names[0]], [*pids, pids[0]], "probe")
    with pytest.raises(DataError, match=r"duplicate entry \(first listed at row 1\)"):
        tinyface.read_manifest(root, progress=False)
    df = tinyface.read_manifest(root, progress=False, on_error="skip")
    assert df.attrs["skipped"] == 1
    expect_equal(df, truth)


def test_tinyface_training_image_outside_its_folder_naming(tiny):
    root, truth = tiny
    (root / "Training_Set/1/1_1.jpg").rename(root / "Training_Set/1/2_9.jpg")
    with pytest.raises(DataError, match=r"Training_Set/1/2_9\.jpg: filename prefix is not"):
        tinyface.read_manifest(root, progress=False)
    df = tinyface.read_manifest(root, progress=False, on_error="skip")
    assert df.attrs["skipped"] == 1 and len(df) == len(truth) - 1


def test_tinyface_corrupt_and_truncated_jpegs(tiny):
    root, truth = tiny
    victim = root / truth.loc[truth["split"] == "gallery", "path"].iloc[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    (root / "Testing_Set/Gallery_Distractor/90000_1.jpg").write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(DataError, match=rf"{victim.name}: image does not decode"):
        tinyface.read_manifest(root, progress=False)
    df = tinyface.read_manifest(root, progress=False, on_error="skip")
    assert df.attrs["skipped"] == 2
    assert len(df) == len(truth) - 2 and victim.name not in " ".join(df["path"])


def test_tinyface_list_entry_escaping_its_folder_always_raises(tiny):
    root, _ = tiny
    shutil.copy(root / "Testing_Set/Probe/5_1.jpg", root / "Testing_Set/5_1.jpg")
    names, pids = read_list(root / PROBE_MAT, "probe")
    write_list(root / PROBE_MAT, [*names, "../5_1.jpg"], [*pids, 5], "probe")
    for mode in ("raise", "skip"):
        with pytest.raises(
            DataError, match=r"probe_img_ID_pairs\.mat: path '\.\./5_1\.jpg' escapes"
        ):
            tinyface.read_manifest(root, progress=False, on_error=mode)


# --- SurvFace -------------------------------------------------------------------------------


def test_survface_reader_matches_the_fixture(surv_src):
    root, truth = surv_src
    df = survface.read_manifest(root, progress=False)
    expect_equal(df, truth.manifest)
    assert set(df["split"]) == set(survface.SPLITS) and df.attrs["skipped"] == 0
    assert (df["source"] == "survface").all()
    assert (df.loc[df["split"] == "unmated_probe", "identity"] == "").all()


def test_survface_pairs_and_folds(surv_src):
    root, truth = surv_src
    pairs = survface.read_pairs(root, fold_size=3)
    expect_equal(pairs, truth.pairs)
    assert pairs["fold"].tolist() == (truth.pairs["index"] // 3).tolist()
    assert pairs.groupby("same")["fold"].apply(lambda f: f.value_counts().tolist()).tolist() == [
        [3, 3, 3],
        [3, 3, 3],
    ]
    assert (survface.read_pairs(root)["fold"] == 0).all()  # 532 pairs per fold by default


def test_survface_missing_mat_and_unknown_pair_file(surv):
    root, truth = surv
    (root / POS_MAT).unlink()
    with pytest.raises(DataError, match=r"positive_pairs_names\.mat: protocol file missing"):
        survface.read_pairs(root)
    with pytest.raises(DataError, match=r"positive_pairs_names\.mat: protocol file missing"):
        survface.read_manifest(root, progress=False, splits=["verification"])
    listed = positive_names(truth)
    savemat(
        root / POS_MAT, {"positive_pairs_names": cells([*listed, ("101_cam9_9.jpg", listed[0][0])])}
    )
    with pytest.raises(DataError, match=r"row 10 .*unknown file in a protocol list: '101_cam9_9"):
        survface.read_pairs(root)
    pairs = survface.read_pairs(root, on_error="skip")
    assert pairs.attrs["skipped"] == 1
    expect_equal(pairs, truth.pairs)


def test_survface_duplicate_and_contradicting_pairs(surv):
    root, truth = surv
    listed = positive_names(truth)
    savemat(root / POS_MAT, {"positive_pairs_names": cells([*listed, listed[2][::-1]])})
    with pytest.raises(
        DataError,
        match=r"row 10 .*duplicate pair \(first listed at "
        r"positive_pairs_names\.mat row 3\)",
    ):
        survface.read_pairs(root)
    other = truth.pairs.loc[~truth.pairs["same"], "path_a"].iloc[0].rsplit("/")[-1]
    crossed = next(b for _, b in listed if b.split("_")[0] != other.split("_")[0])
    savemat(root / POS_MAT, {"positive_pairs_names": cells([*listed, (other, crossed)])})
    with pytest.raises(DataError, match=r"filename prefixes contradict a positive pair"):
        survface.read_pairs(root)
    savemat(root / POS_MAT, {"positive_pairs_names": cells(["a.jpg", "b.jpg"])})
    with pytest.raises(DataError, match=r"positive_pairs_names must be an Nx2 cell"):
        survface.read_pairs(root)


def test_survface_identification_lists(surv):
    root, truth = surv
    names, pids = read_list(root / MATED_MAT, "mated_probe")
    write_list(root / MATED_MAT, names, [*pids[:-1], 999], "mated_probe")
    with pytest.raises(DataError, match=rf"row {len(names)} .*id 999 disagrees"):
        survface.read_manifest(root, progress=False)
    write_list(
        root / MATED_MAT, [*names, "../../training_set/1/1_cam2_1.jpg"], [*pids, 1], "mated_probe"
    )
    with pytest.raises(DataError, match=r"mated_probe_img_ID_pairs\.mat: path .* escapes"):
        survface.read_manifest(root, progress=False, on_error="skip")
    (root / MATED_MAT).unlink()
    with pytest.raises(DataError, match=r"mated_probe_img_ID_pairs\.mat: protocol file missing"):
        survface.read_manifest(root, progress=False)
    df = survface.read_manifest(root, progress=False, splits=["train", "unmated_probe"])
    expect_equal(
        df,
        truth.manifest[truth.manifest["split"].isin(["train", "unmated_probe"])].reset_index(
            drop=True
        ),
    )


def test_survface_bad_training_images(surv):
    root, truth = surv
    (root / "training_set/2/2_cam1_3.jpg").write_bytes(b"")
    (root / "training_set/1/1_cam2_1.jpg").rename(root / "training_set/1/1_2_1.jpg")
    with pytest.raises(DataError, match=r"training_set/1/1_2_1\.jpg: not named 1_cam<k>_<n>\.jpg"):
        survface.read_manifest(root, progress=False)
    df = survface.read_manifest(root, progress=False, on_error="skip", splits=["train"])
    assert df.attrs["skipped"] == 2 and len(df) == (truth.manifest["split"] == "train").sum() - 2
    assert any("2_cam1_3.jpg: image does not decode" in m for m in df.attrs["skipped_examples"])


# --- combined training set ------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_sets(tiny_src, surv_src):
    return (
        tinyface.read_manifest(tiny_src[0], progress=False, splits=["train"]),
        survface.read_manifest(surv_src[0], progress=False, splits=["train"]),
    )


def test_equal_raw_ids_of_two_datasets_stay_two_classes(train_sets):
    tiny_train, surv_train = train_sets
    assert set(tiny_train["identity"]) & set(surv_train["identity"]) == {"1", "2"}
    combined = combine_identities([tiny_train, surv_train])
    assert len(combined) == len(tiny_train) + len(surv_train)
    assert set(combined["identity"]) == {
        "tinyface:1",
        "tinyface:2",
        "tinyface:3",
        "survface:1",
        "survface:2",
    }
    assert len(label_map(combined)) == 5
    assert (combined["identity"] == combined["source"] + ":" + combined["raw_identity"]).all()
    assert combined.attrs["skipped"] == 0


def test_a_mapping_merges_matching_identities(train_sets, tmp_path):
    mapping = tmp_path / "map.csv"
    mapping.write_text(
        "source,identity,global_identity\n"
        "tinyface,1,person:1\n"
        "survface,2,person:1\n"
        "survface,1,tinyface:3\n"
    )
    combined = combine_identities(train_sets, mapping)
    assert sorted(set(combined["identity"])) == ["person:1", "tinyface:2", "tinyface:3"]
    merged = combined[combined["identity"] == "person:1"]
    assert set(zip(merged["source"], merged["raw_identity"], strict=True)) == {
        ("tinyface", "1"),
        ("survface", "2"),
    }


def test_a_bad_mapping_is_named_by_file_and_row(train_sets, tmp_path):
    mapping = tmp_path / "map.csv"
    header = "source,identity,global_identity\n"
    mapping.write_text(header + "tinyface,1,person:1\nsurvface,3,person:1\n")
    with pytest.raises(DataError, match=r"map\.csv:3: unknown identity 'survface:3'"):
        combine_identities(train_sets, mapping)
    mapping.write_text(header + "tinyface,1,a\ntinyface,1,b\n")
    with pytest.raises(DataError, match=r"map\.csv:3: identity 'tinyface:1' is mapped twice"):
        combine_identities(train_sets, mapping)
    with pytest.raises(DataError, match=r"nowhere\.csv: identity mapping file missing"):
        combine_identities(train_sets, tmp_path / "nowhere.csv")
    mapping.write_text("dataset,id,global\ntinyface,1,a\n")
    with pytest.raises(DataError, match=r"map\.csv: expected the header source,identity,global"):
        combine_identities(train_sets, mapping)


def test_only_labelled_rows_of_distinct_datasets_combine(train_sets, tiny_src):
    tiny_train, surv_train = train_sets
    with pytest.raises(DataError, match=r"'tinyface'\] given in more than one manifest"):
        combine_identities([tiny_train, tiny_train])
    distractors = tinyface.read_manifest(tiny_src[0], progress=False, splits=["distractor"])
    with pytest.raises(DataError, match=r"tinyface: 3 row\(s\) without an identity"):
        combine_identities([distractors, surv_train])
    assert np.array_equal(combine_identities([surv_train])["raw_identity"], surv_train["identity"])
