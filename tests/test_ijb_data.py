"""IJB-B/C readers (insightface pack and NIST CSVs) against the fixtures, and bad input."""

import pandas as pd
import pytest

from vlrface.data import ijb
from vlrface.data.fixtures.ijb import write_ijb_nist, write_ijb_pack
from vlrface.data.records import DataError


def same_protocols(got: ijb.Protocols, truth) -> None:
    pd.testing.assert_frame_equal(got.pairs, truth.pairs)
    pd.testing.assert_frame_equal(got.probes, truth.probes)
    assert got.galleries.keys() == truth.galleries.keys()
    for name, table in truth.galleries.items():
        pd.testing.assert_frame_equal(got.galleries[name], table)


@pytest.mark.parametrize("dataset", ["ijbb", "ijbc"])
def test_pack_equals_ground_truth(tmp_path, dataset):
    truth = write_ijb_pack(tmp_path, dataset=dataset)
    df = ijb.read_manifest(tmp_path, progress=False)
    cols = list(truth.faces.columns)
    assert df[cols].to_dict("records") == truth.faces.to_dict("records")
    assert set(df["split"]) == {"test"} and set(df["source"]) == {dataset}
    assert df["decodable"].all() and "" in set(df["identity"])  # a 1:1-only template
    same_protocols(ijb.read_protocols(tmp_path), truth)
    # the fixture exercises video averaging and the open set
    assert (df.groupby(["template_id", "media_id"]).size() > 1).any()
    protocols = ijb.read_protocols(tmp_path)
    first = next(iter(protocols.galleries.values()))
    assert set(protocols.probes["subject_id"]) - set(first["subject_id"])


@pytest.mark.parametrize("dataset", ["ijbb", "ijbc"])
def test_nist_equals_ground_truth(tmp_path, dataset):
    truth = write_ijb_nist(tmp_path, dataset=dataset)
    df = ijb.read_manifest(tmp_path, progress=False)
    cols = list(truth.faces.columns)
    assert df[cols].to_dict("records") == truth.faces.to_dict("records")
    assert "landmarks" not in df
    same_protocols(ijb.read_protocols(tmp_path), truth)


def test_nist_match_list_with_header_and_v1_filename_column(tmp_path):
    truth = write_ijb_nist(tmp_path, dataset="ijbc")
    matches = tmp_path / "protocols" / "ijbc_11_G1_G2_matches.csv"
    matches.write_text("ENROLL_TEMPLATE_ID,VERIF_TEMPLATE_ID\n" + matches.read_text())
    probe = tmp_path / "protocols" / "ijbc_1N_probe_mixed.csv"
    probe.write_text(probe.read_text().replace("FILENAME", "FILE", 1))
    assert (
        ijb.read_manifest(tmp_path, progress=False)["path"].tolist() == truth.faces["path"].tolist()
    )
    pd.testing.assert_frame_equal(ijb.read_protocols(tmp_path).pairs, truth.pairs)


def test_meta_line_with_wrong_field_count(tmp_path):
    write_ijb_pack(tmp_path)
    meta = tmp_path / "meta" / "ijbc_face_tid_mid.txt"
    lines = meta.read_text().splitlines()
    lines[2] += " 7"
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"ijbc_face_tid_mid.txt:3: expected 3 fields, got 4"):
        ijb.read_manifest(tmp_path, progress=False)
    points = tmp_path / "meta" / "ijbc_name_5pts_score.txt"
    meta.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    points.write_text(points.read_text() + "99.jpg 1 2 3\n")
    n = len(points.read_text().splitlines())
    with pytest.raises(DataError, match=rf"ijbc_name_5pts_score.txt:{n}: expected 12 fields"):
        ijb.read_manifest(tmp_path, progress=False)


def test_pair_naming_unknown_template(tmp_path):
    write_ijb_pack(tmp_path)
    pairs = tmp_path / "meta" / "ijbc_template_pair_label.txt"
    pairs.write_text(pairs.read_text() + "1 999 0\n")
    n = len(pairs.read_text().splitlines())
    with pytest.raises(DataError, match=rf"pair_label.txt:{n}: template 999 is not a known"):
        ijb.read_protocols(tmp_path)


def test_nist_pair_naming_unknown_template(tmp_path):
    write_ijb_nist(tmp_path, dataset="ijbb")
    matches = tmp_path / "protocol" / "ijbb_11_S1_S2_matches.csv"
    matches.write_text("998,11\n" + matches.read_text())
    with pytest.raises(DataError, match=r"S2_matches.csv:1: template 998 is not a known"):
        ijb.read_protocols(tmp_path)


def test_image_listed_in_meta_missing(tmp_path):
    truth = write_ijb_pack(tmp_path)
    (tmp_path / "loose_crop" / "2.jpg").unlink()
    with pytest.raises(DataError, match=r"ijbc_face_tid_mid.txt:2: image loose_crop/2.jpg"):
        ijb.read_manifest(tmp_path, progress=False)
    df = ijb.read_manifest(tmp_path, on_error="skip", progress=False)
    assert len(df) == len(truth.faces) - 1 and df.attrs["skipped"] == 1


def test_nist_missing_image_and_not_ijb(tmp_path):
    write_ijb_nist(tmp_path / "b", dataset="ijbb")
    (tmp_path / "b" / "img" / "1.jpg").unlink()
    with pytest.raises(DataError, match=r"ijbb_1N_gallery_S1.csv:2: image img/1.jpg"):
        ijb.read_manifest(tmp_path / "b", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither an IJB pack"):
        ijb.read_manifest(tmp_path / "empty", progress=False)
