"""GX suites per dataset: real GX 1.x on manifests read from fixtures or shaped like the readers'.

Each failure is provoked by one change to a passing manifest and must name the expectation and
the offending row; subsets of a release warn and are recorded, never fail.
"""

import logging

import numpy as np
import pandas as pd
import pytest

from vlrface.data import casia, datasets, insightface, lfw, scface, survface, tinyface, vggface2
from vlrface.data.fixtures.insightface import write_pack
from vlrface.data.fixtures.lfw import write_lfw
from vlrface.data.fixtures.scface import write_scface
from vlrface.data.fixtures.survface import write_survface
from vlrface.data.fixtures.tinyface import write_tinyface
from vlrface.data.fixtures.vggface2 import write_vggface2
from vlrface.data.records import finalize
from vlrface.data.synthetic import write_casia_layout
from vlrface.data.validation import (
    DataValidationError,
    check_disjoint,
    split_by_role,
    validate_dataset,
    validate_manifest,
)

# ArcFace 5-point template (docs/datasets.md), x1, y1, ..., x5, y5
TEMPLATE = [38.3, 51.7, 73.5, 51.5, 56.0, 71.7, 41.5, 92.4, 70.7, 92.2]


def shaped(rows: list[dict], **columns) -> pd.DataFrame:
    """A manifest shaped like a reader's: standard columns, image facts filled in."""
    base = {"width": 112, "height": 112, "channels": 3, "decodable": True, "size_bytes": 900}
    full = [{**base, "sha256": f"{i:064x}", **r} for i, r in enumerate(rows)]
    df = finalize(full)
    for name, values in columns.items():
        df[name] = values
    return df


def pack(n_ids: int, per_id: int = 2) -> pd.DataFrame:
    """An MS1M-RetinaFace manifest: ``train.rec#<key>`` records."""
    rows = [
        {
            "path": f"train.rec#{1 + i * per_id + k}",
            "identity": str(i),
            "split": "train",
            "source": "ms1m_retinaface",
        }
        for i in range(n_ids)
        for k in range(per_id)
    ]
    return shaped(rows)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("v")
    casia_root = write_casia_layout(tmp / "casia", 4, 3, seed=2, progress=False)
    write_tinyface(tmp / "tinyface")
    write_scface(tmp / "scface", cameras=(1,))
    write_survface(tmp / "survface")
    write_lfw(tmp / "lfw")
    write_vggface2(tmp / "vggface2")
    write_pack(tmp / "ms1m-retinaface-t1")
    return {
        "lfw": lfw.read_manifest(tmp / "lfw", progress=False),
        "lfw_pairs": datasets.get("lfw").pair_reader()(tmp / "lfw"),
        "vggface2": vggface2.read_manifest(tmp / "vggface2", progress=False),
        "ms1m_retinaface": insightface.read_manifest(tmp / "ms1m-retinaface-t1", progress=False),
        "casia": casia.read_manifest(casia_root, test_fraction=0.3, progress=False),
        "tinyface": tinyface.read_manifest(tmp / "tinyface", progress=False),
        "scface": scface.read_manifest(tmp / "scface", progress=False),
        "survface": survface.read_manifest(tmp / "survface", progress=False),
        "survface_pairs": datasets.get("survface").pair_reader()(tmp / "survface"),
    }


def fails(match: str, *args, **kwargs):
    with pytest.raises(DataValidationError, match=match) as err:
        validate_dataset(*args, **kwargs)
    assert "\n" not in str(err.value)
    return err.value


def test_demo_suite_still_gates_the_pipeline_and_renders_docs(data, tmp_path):
    report = validate_manifest(data["casia"], "demo", 112, docs_dir=tmp_path / "docs")
    assert report["statistics"]["success_percent"] == 100.0  # steps/data.py logs this
    assert "demo" in (tmp_path / "docs" / "index.html").read_text()
    bad = data["casia"].copy()
    bad.loc[0, "width"] = 100
    with pytest.raises(DataValidationError, match=r"width.*1 row\(s\) fail; e\.g\. 0000001/001"):
        validate_manifest(bad, "demo", 112)


def test_release_subsets_pass_with_recorded_warnings(data, tmp_path, caplog):
    with caplog.at_level(logging.INFO, "vlrface.data.validation"):
        report = validate_dataset(data["casia"], "casia_webface", docs_dir=tmp_path / "docs")
    assert report["success"] and report["failures"] == []
    assert report["counts"] == [
        {
            "split": "all",
            "images": 12,
            "identities": 4,
            "official_images": 494_414,
            "official_identities": 10_575,
        }
    ]
    assert any("official_images,images" in w for w in report["warnings"])
    # a subset is expected (demo set, fixtures): said once, as information, not as a warning
    ours = [r for r in caplog.records if r.name == "vlrface.data.validation"]
    assert [r.levelno for r in ours] == [logging.INFO]
    note = ours[0].getMessage()
    assert note.startswith("casia_webface: a subset of the release (all 12 of 494414 images, ")
    index = (tmp_path / "docs" / "index.html").read_text()
    assert "casia_webface.manifest" in index and "casia_webface.counts" in index
    for name in ("scface", "vggface2"):  # vggface2: 5-point landmarks in the loose crops
        assert validate_dataset(data[name], name)["success"]
    report = validate_dataset(data["lfw"], "lfw", pairs=data["lfw_pairs"])
    assert report["success"] and "lfw.pairs" in report["results"]
    loaded = data["tinyface"].copy()
    loaded.attrs = {"provenance": {"skipped": 2}}  # as load_manifest returns it
    report = validate_dataset(loaded, "tinyface")
    assert (
        report["success"] and "tinyface: the reader skipped 2 bad record(s)" in report["warnings"]
    )


def test_a_superset_of_the_release_fails():
    mugshots = [
        {
            "path": f"mugshot_frontal_cropped_all/{s:03d}_frontal.JPG",
            "identity": f"{s:03d}",
            "split": "mugshot",
            "source": "scface",
        }
        for s in range(1, 132)  # SCface has 130 subjects
    ]
    fails(
        r"scface\.counts: .*\(official_identities,identities\): 2 row\(s\) fail; "
        r"e\.g\. all, mugshot",
        shaped(mugshots),
        "scface",
    )


def test_schema_layout_and_decoding_failures_name_rows(data):
    m = data["casia"]
    schema = m.astype({"width": "float64"}).drop(columns="sha256")
    schema.loc[0, "identity"] = 7  # still an object column, but not all str
    fails(
        r"casia_webface\.schema: expect_column_pair_values_to_be_equal\(actual,expected\): "
        r"3 row\(s\) fail; e\.g\. identity, width, sha256$",
        schema,
        "casia_webface",
    )
    bad = m.copy()
    bad.loc[3, "path"] = "faces/0000002/001.png"
    bad.loc[5, ["decodable", "width", "height", "channels"]] = [False, -1, -1, -1]
    bad.loc[2, "split"] = "val"
    err = str(
        fails(
            r"match_regex\(path\): 1 row\(s\) fail; e\.g\. faces/0000002/001\.png",
            bad,
            "casia_webface",
        )
    )
    assert f"in_set(decodable): 1 row(s) fail; e.g. {m.loc[5, 'path']}" in err
    assert f"in_set(split): 1 row(s) fail; e.g. {m.loc[2, 'path']}" in err


def test_resolution_distribution(data):
    big = data["tinyface"].copy()  # native TinyFace faces are < 32 px; 4x is not TinyFace
    big[["width", "height"]] *= 4
    fails(r"expect_column_mean_to_be_between\(face_px\): observed", big, "tinyface")
    m = data["ms1m_retinaface"].copy()
    assert validate_dataset(m, "ms1m_retinaface")["success"]
    m.loc[4, "height"] = 100  # a pack is aligned 112x112
    fails(r"between\(height\): 1 row\(s\) fail; e\.g\. " + m.path[4], m, "ms1m_retinaface")


def test_landmark_sanity():
    bad = {
        "train.rec#2": [120.0, *TEMPLATE[1:]],  # outside the 112 px image
        "train.rec#3": [*TEMPLATE[:6], 41.5, 40.0, 70.7, 40.0],  # mouth above the eyes
        "train.rec#4": [*TEMPLATE[:2], *TEMPLATE[:2], *TEMPLATE[4:]],  # both eyes at one point
    }
    m = pack(2)
    m["landmarks"] = [bad.get(p, TEMPLATE) for p in m["path"]]
    assert validate_dataset(m.iloc[[0]], "ms1m_retinaface")["success"]
    err = fails(r"lm_inside\): 1 row\(s\) fail; e\.g\. train\.rec#2", m, "ms1m_retinaface")
    assert "lm_eyes_above_mouth): 1 row(s) fail; e.g. train.rec#3" in str(err)
    assert "lm_interocular): 1 row(s) fail; e.g. train.rec#4" in str(err)


def test_scface_four_point_landmarks(data):
    m = data["scface"]
    assert m["landmarks4"].notna().any()
    assert validate_dataset(m, "scface")["success"]
    flipped = m.copy()
    i = flipped["landmarks4"].first_valid_index()
    pts = np.asarray(flipped.at[i, "landmarks4"], dtype=float).reshape(4, 2)
    flipped.at[i, "landmarks4"] = [*pts[:3].ravel(), pts[3, 0], 0.0]  # mouth at the top
    fails(r"lm_eyes_above_mouth\): 1 row\(s\) fail; e\.g\. " + m.at[i, "path"], flipped, "scface")


def test_verification_pairs_against_the_manifest(data):
    m, pairs = data["survface"], data["survface_pairs"]
    report = validate_dataset(m, "survface", pairs=pairs)
    assert report["success"]
    assert {r["split"]: r["images"] for r in report["counts"]}["pairs:same"] == pairs.same.sum()
    gone = pairs.loc[0, "path_a"]  # an image the pair list names is not in the manifest
    wrong = pairs.copy()
    flip = len(pairs) - 1  # a pair whose polarity disagrees with its identities
    wrong.loc[flip, "same"] = not wrong.loc[flip, "same"]
    err = fails(
        rf"a_listed\): \d+ row\(s\) fail; e\.g\. {gone}", m[m.path != gone], "survface", pairs=wrong
    )
    assert f"same_matches_identities): 1 row(s) fail; e.g. {pairs.path_a[flip]}" in str(err)
    positives = pairs[pairs.same]
    many = pd.concat([positives] * (5_321 // len(positives) + 1)).iloc[:5_321]
    fails(
        r"official_images,images\): 1 row\(s\) fail; e\.g\. pairs:same", m, "survface", pairs=many
    )


def test_identity_disjointness_within_a_dataset(data):
    train, evaluation = split_by_role("tinyface", data["tinyface"])
    assert check_disjoint({"tinyface": train}, {"tinyface": evaluation})["success"]
    leaked = evaluation.copy()
    leaked.loc[leaked.index[0], "identity"] = ident = train["identity"].iloc[0]
    key = f"{train['source'].iloc[0]}:{ident}"
    with pytest.raises(
        DataValidationError, match=rf"1 row\(s\) fail; e\.g\. tinyface/tinyface/{key}$"
    ):
        check_disjoint({"tinyface": train}, {"tinyface": leaked})

    p = scface.protocol_50_80(data["scface"])
    test = pd.concat([p.gallery, *p.probes.values()])
    assert check_disjoint({"scface": p.train}, {"scface": test})["success"]
    with pytest.raises(DataValidationError, match=r"scface/scface/scface:001"):
        check_disjoint({"scface": p.train}, {"scface": pd.concat([test, p.train.iloc[:1]])})


def test_lfw_people_in_casia_warn_with_their_count_other_overlaps_fail(data):
    people = ["Synthetic_Person_00001", "Synthetic_Person_00003", "Ada_Lovelace"]
    lfw = shaped(
        [
            {"path": f"{n}/{n}_0001.jpg", "identity": n, "split": "test", "source": "lfw"}
            for n in people
        ]
    )
    report = check_disjoint({"casia_webface": data["casia"]}, {"lfw": lfw})
    assert report["success"] and report["overlaps"] == {"casia_webface->lfw": 2}
    assert report["warnings"] == [
        "2 identities of lfw are in casia_webface (known, accepted overlap)"
    ]
    with pytest.raises(DataValidationError, match=r"vggface2/lfw/name:synthetic_person_00001"):
        check_disjoint({"vggface2": data["casia"]}, {"lfw": lfw})
