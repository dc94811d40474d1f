"""Protocol runners on the dataset fixtures: exact known answers and direct recomputation.

* ``Oracle``: an embedder holding a table ``sha256(normalised face) -> identity`` that the test
  builds from the fixture's own ground truth, for every face at every resolution the protocol
  should embed (and their mirror images). It answers the identity's one-hot, so a correctly wired
  protocol scores perfectly (rank-1 = mAP = TAR = 1, EER = FNIR = 0) and ``misses`` (faces it
  was never told about) stays 0: a face degraded at the wrong size, a mislabelled gallery or a
  swapped pair side breaks one or the other.
* ``Projection``: a fixed random projection of an 8x8 area thumbnail; the test recomputes the
  protocol's figures from its own embeddings through the metric core and compares.
"""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from vlrface.data.fixtures.ijb import write_ijb_nist, write_ijb_pack
from vlrface.data.fixtures.lfw import write_lfw
from vlrface.data.fixtures.scface import write_scface
from vlrface.data.fixtures.survface import write_survface
from vlrface.data.fixtures.tinyface import write_tinyface
from vlrface.data.fixtures.vggface2 import write_vggface2
from vlrface.degrade import degrade
from vlrface.embedders import embed_images
from vlrface.preprocess import load_face, normalize
from vlrface.protocols.common import prepare
from vlrface.protocols.identification import closed_set_identification
from vlrface.protocols.metrics import verification_1to1
from vlrface.protocols.runners import PROTOCOLS
from vlrface.protocols.templates import score_template_pairs, template_features
from vlrface.protocols.verification import heldout_accuracies, tar_at_far


def _key(face: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(face, np.float32).tobytes()).hexdigest()


class Oracle:
    """One-hot of the identity of each face it was taught; a hash-seeded vector otherwise."""

    def __init__(self):
        self.table: dict[str, int] = {}
        self.labels: dict[str, int] = {}
        self.misses = 0

    def teach(self, face_uint8: np.ndarray, identity: str, resolutions) -> None:
        label = self.labels.setdefault(identity, len(self.labels))
        for r in [None, *resolutions]:
            face = face_uint8 if r is None or r >= 112 else degrade(face_uint8, r)
            x = normalize(face)
            self.table[_key(x)] = self.table[_key(x[:, ::-1])] = label

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = np.zeros((len(batch), 256), np.float32)
        for i, x in enumerate(batch):
            label = self.table.get(_key(x))
            if label is None:
                self.misses += 1
                out[i] = np.random.default_rng(int(_key(x)[:8], 16)).normal(size=256)
            else:
                out[i, label] = 1.0
        return out


class Projection:
    """A fixed random projection of the 8x8 inter-area thumbnail."""

    def __init__(self, seed: int = 0):
        self.w = np.random.default_rng(seed).normal(size=(8 * 8 * 3, 24)).astype(np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        small = [cv2.resize(x, (8, 8), interpolation=cv2.INTER_AREA) for x in batch]
        return np.stack(small).reshape(len(batch), -1) @ self.w


def _assert_all(metrics: dict, suffix: str, value: float) -> None:
    picked = {k: v for k, v in metrics.items() if k.endswith(suffix)}
    assert picked, f"no metric ends with {suffix}"
    bad = {k: v for k, v in picked.items() if v != pytest.approx(value)}
    assert not bad, bad


# ---------------------------------------------------------------- LFW


def test_lfw_oracle_is_perfect_with_stable_names(tmp_path):
    truth = write_lfw(tmp_path)
    oracle, res = Oracle(), [7, 14, 28, 112]
    for path, ident in zip(truth["manifest"]["path"], truth["manifest"]["identity"], strict=True):
        oracle.teach(prepare(load_face(tmp_path, path), center_crop=0.56), ident, res)
    # align="none": the centre crop the oracle was taught (alignment has its own tests)
    metrics, art = PROTOCOLS["lfw"](oracle, tmp_path, resolutions=res, progress=False, align="none")
    assert oracle.misses == 0
    stats = art["alignment"]
    assert stats["align"] == "none" and stats["none"] > 0
    assert stats["landmarks"] == stats["detector"] == stats["fallback"] == 0
    expected = {
        f"eval.lfw.{v}.{r}.{m}"
        for v in ("hr_lr", "lr_lr")
        for r in res
        for m in ("acc", "acc_std", "tar_far_1e-3")
    }
    assert set(metrics) == expected
    _assert_all(metrics, ".acc", 1.0)
    _assert_all(metrics, ".acc_std", 0.0)
    _assert_all(metrics, ".tar_far_1e-3", 1.0)
    assert list(art["fold"]) == list(truth["pairs"]["fold"])


def test_lfw_matches_direct_computation_per_side(tmp_path):
    truth = write_lfw(tmp_path)
    emb = Projection()
    metrics, art = PROTOCOLS["lfw"](
        emb, tmp_path, resolutions=[7, 21], progress=False, align="none"
    )
    pairs = truth["pairs"]
    faces = {
        p: prepare(load_face(tmp_path, p), center_crop=0.56)
        for p in pd.unique(pairs[["path_a", "path_b"]].to_numpy().ravel())
    }

    def e(path, r):
        face = faces[path] if r is None else degrade(faces[path], r, "area", "area")
        return embed_images(emb, normalize(face[None]), flip=True)[0]

    same, fold = pairs["same"].to_numpy(), pairs["fold"].to_numpy()
    for r in (7, 21):
        for variant, ra in (("hr_lr", None), ("lr_lr", r)):
            s = np.array(
                [e(a, ra) @ e(b, r) for a, b in zip(pairs.path_a, pairs.path_b, strict=True)]
            )
            key = f"eval.lfw.{variant}.{r}"
            np.testing.assert_allclose(art["scores"][key], s, atol=1e-6)
            accs = heldout_accuracies(s, same, fold)
            assert metrics[f"{key}.acc"] == pytest.approx(accs.mean())
            assert metrics[f"{key}.acc_std"] == pytest.approx(accs.std())
            assert metrics[f"{key}.tar_far_1e-3"] == pytest.approx(tar_at_far(s, same, 1e-3))
    # the two sides differ: the HR side is not degraded in hr_lr
    assert not np.allclose(art["scores"]["eval.lfw.hr_lr.7"], art["scores"]["eval.lfw.lr_lr.7"])


# ---------------------------------------------------------------- TinyFace, SCface, SurvFace


def test_tinyface_oracle_rank_and_map_are_one(tmp_path):
    truth = write_tinyface(tmp_path)
    oracle = Oracle()
    for row in truth.itertuples():
        if row.split != "train":
            ident = row.identity or f"distractor:{row.path}"
            oracle.teach(prepare(load_face(tmp_path, row.path)), ident, [8])
    metrics, art = PROTOCOLS["tinyface"](oracle, tmp_path, resolutions=[8], progress=False)
    assert oracle.misses == 0
    for res in ("native", "8"):
        for m in ("rank1", "rank5", "rank10", "rank20", "rank50", "mAP"):
            assert metrics[f"eval.tinyface.devkit.{res}.{m}"] == 1.0
    assert art["n_gallery"] == 6 + 3  # matches + distractors


def test_tinyface_mislabelled_probe_costs_exactly_its_rank1(tmp_path):
    """Can fail: probe 12 taught as identity 40 ranks 40's two gallery faces first."""
    truth = write_tinyface(tmp_path)
    oracle = Oracle()
    for row in truth.itertuples():
        if row.split != "train":
            ident = row.identity or f"distractor:{row.path}"
            ident = "40" if (row.split, ident) == ("probe", "12") else ident
            oracle.teach(prepare(load_face(tmp_path, row.path)), ident, [])
    metrics, _ = PROTOCOLS["tinyface"](oracle, tmp_path, progress=False)
    assert oracle.misses == 0
    assert metrics["eval.tinyface.devkit.native.rank1"] == pytest.approx(2 / 3)
    assert metrics["eval.tinyface.devkit.native.mAP"] < 1.0
    assert metrics["eval.tinyface.devkit.native.rank10"] == 1.0  # 9 gallery faces in all


def test_scface_oracle_rank1_per_distance_and_camera(tmp_path):
    truth = write_scface(tmp_path, subjects=53, cameras=(1, 2, 6))
    oracle = Oracle()
    for row in truth.itertuples():
        if row.camera in ("mugshot", "cam1", "cam2"):
            oracle.teach(
                prepare(load_face(tmp_path, row.path), landmarks=row.landmarks4), row.identity, []
            )
    metrics, art = PROTOCOLS["scface"](oracle, tmp_path, progress=False)
    assert oracle.misses == 0
    expected = {
        f"eval.scface.{v}.{s}.rank1"
        for v in ("50_80", "all130")
        for s in ("d1", "d2", "d3", "cam1", "cam2", "mean")
    }
    assert set(metrics) == expected
    _assert_all(metrics, ".rank1", 1.0)


def test_scface_matches_direct_rank1(tmp_path):
    truth = write_scface(tmp_path, subjects=53, cameras=(1,))
    emb = Projection(1)
    metrics, _ = PROTOCOLS["scface"](emb, tmp_path, progress=False, variants=("all130",))

    def e(row):
        face = prepare(load_face(tmp_path, row.path), landmarks=row.landmarks4)
        return embed_images(emb, normalize(face[None]), flip=True)[0]

    gallery = truth[truth.camera == "mugshot"]
    g = np.stack([e(r) for r in gallery.itertuples()])
    for d in (1, 2, 3):
        probes = truth[(truth.camera == "cam1") & (truth.distance == d)]
        p = np.stack([e(r) for r in probes.itertuples()])
        best = gallery.identity.to_numpy()[np.argmax(p @ g.T, axis=1)]
        direct = float(np.mean(best == probes.identity.to_numpy()))
        assert metrics[f"eval.scface.all130.d{d}.rank1"] == pytest.approx(direct)


def test_survface_oracle_and_names(tmp_path):
    truth = write_survface(tmp_path)
    oracle = Oracle()
    for row in truth.manifest.itertuples():
        if row.split != "train":
            ident = row.identity or f"unmated:{row.path}"
            oracle.teach(prepare(load_face(tmp_path, row.path)), ident, [16])
    metrics, art = PROTOCOLS["survface"](
        oracle, tmp_path, resolutions=[16], fold_size=3, progress=False
    )
    assert oracle.misses == 0
    for res in ("native", "16"):
        v = f"eval.survface.verification.{res}"
        for m in ("tar_far_3e-1", "tar_far_1e-1", "tar_far_1e-2", "tar_far_1e-3", "auc"):
            assert metrics[f"{v}.{m}"] == pytest.approx(1.0)
        assert metrics[f"{v}.mean_acc"] == 1.0
        for f in ("1e-2", "1e-1", "2e-1", "3e-1"):
            assert metrics[f"eval.survface.open_set.{res}.tpir20_fpir_{f}"] == 1.0
        assert f"eval.survface.open_set.{res}.auc" in metrics
    assert art["same"].sum() == truth.pairs.same.sum()


# ---------------------------------------------------------------- IJB


def _teach_ijb(oracle, root, faces, res, pack):
    for row in faces.itertuples():
        ident = row.identity or f"template:{row.template_id}"
        img = load_face(root, row.path)
        face = prepare(img, landmarks=row.landmarks) if pack else prepare(img, bbox=row.bbox)
        oracle.teach(face, ident, res)


@pytest.mark.parametrize("layout", ["pack", "nist"])
def test_ijb_oracle_every_resolution_and_matrix(tmp_path, layout):
    dataset = "ijbc" if layout == "pack" else "ijbb"
    truth = (write_ijb_pack if layout == "pack" else write_ijb_nist)(tmp_path, dataset=dataset)
    oracle, res = Oracle(), [8, 16, 128]
    _teach_ijb(oracle, tmp_path, truth.faces, res, layout == "pack")
    metrics, art = PROTOCOLS[dataset](oracle, tmp_path, resolutions=res, progress=False)
    assert oracle.misses == 0
    for v in ("hr_lr", "lr_lr"):
        for r in ("8", "16", "128", "full"):
            key = f"eval.{dataset}.{v}.{r}"
            for f in ("1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1"):
                assert metrics[f"{key}.tar_far_{f}"] == 1.0
            assert metrics[f"{key}.eer"] == 0.0
            for k in (1, 5, 10):
                assert metrics[f"{key}.rank{k}"] == 1.0
            for f in ("1e-4", "1e-3", "1e-2", "1e-1"):
                assert metrics[f"{key}.fnir_fpir_{f}"] == 0.0
    cross = art["cross_resolution"]
    assert cross["resolutions"] == [8, 16, 128, "full"]
    assert cross["tar_far_1e-3"].shape == (4, 4)
    assert (cross["tar_far_1e-3"] == 1.0).all() and (cross["rank1"] == 1.0).all()


def test_ijb_matches_direct_templates_and_matrix_agrees(tmp_path):
    truth = write_ijb_pack(tmp_path, dataset="ijbc")
    emb = Projection(2)
    metrics, art = PROTOCOLS["ijbc"](emb, tmp_path, resolutions=[8, 16], progress=False)
    faces = pd.read_csv(tmp_path / "meta" / "ijbc_face_tid_mid.txt", sep=" ", header=None)
    faces.columns = ["img", "template_id", "media_id"]
    marks = truth.faces.set_index("path")

    def raw(r):
        out = []
        for img in faces.img:
            row = marks.loc[f"loose_crop/{img}"]
            face = prepare(load_face(tmp_path, f"loose_crop/{img}"), landmarks=row.landmarks)
            face = face if r is None else degrade(face, r)
            x = normalize(face[None])
            out.append(emb(x)[0] + emb(np.ascontiguousarray(x[:, :, ::-1]))[0])
        return np.stack(out)

    faceness = np.array([marks.loc[f"loose_crop/{i}"].faceness for i in faces.img])
    tid, hr = template_features(raw(None), faces.template_id, faces.media_id, faceness)
    _, lr = template_features(raw(16), faces.template_id, faces.media_id, faceness)
    pairs = truth.pairs
    a, b = pairs.template_a.to_numpy(), pairs.template_b.to_numpy()
    rows = {t: i for i, t in enumerate(tid)}
    s = np.array(
        [hr[rows[x]] @ lr[rows[y]] for x, y in zip(a, b, strict=True)]
    )  # gallery HR, probe LR
    np.testing.assert_allclose(art["scores"]["eval.ijbc.hr_lr.16"], s, atol=1e-5)
    direct = verification_1to1(s, pairs.label.to_numpy(bool))
    assert metrics["eval.ijbc.hr_lr.16.auc"] == pytest.approx(direct["auc"])
    g = pd.concat(list(truth.galleries.values()))
    gf = hr[[rows[t] for t in g.template_id]]
    pf = lr[[rows[t] for t in truth.probes.template_id]]
    closed = closed_set_identification(
        pf, gf, truth.probes.subject_id.to_numpy(), g.subject_id.to_numpy(), ranks=(1, 5)
    )
    assert metrics["eval.ijbc.hr_lr.16.rank1"] == pytest.approx(closed["rank1"])
    assert metrics["eval.ijbc.hr_lr.16.rank5"] == 1.0  # 4 gallery templates
    s_lr = score_template_pairs(tid, lr, a, b)
    np.testing.assert_allclose(art["scores"]["eval.ijbc.lr_lr.16"], s_lr, atol=1e-5)
    cross = art["cross_resolution"]
    i16, full = cross["resolutions"].index(16), cross["resolutions"].index("full")
    for m in ("tar_far_1e-3", "rank1"):
        assert cross[m][i16, i16] == metrics[f"eval.ijbc.lr_lr.16.{m}"]
        assert cross[m][i16, full] == metrics[f"eval.ijbc.hr_lr.16.{m}"]


# ---------------------------------------------------------------- VGGFace2 pose


def test_vggface2_pose_oracle_frontal_one_image_templates(tmp_path):
    truth = write_vggface2(tmp_path)
    oracle = Oracle()
    for row in truth[truth.pose != ""].itertuples():
        oracle.teach(
            prepare(load_face(tmp_path, row.path), landmarks=row.landmarks), row.identity, []
        )
    metrics, art = PROTOCOLS["vggface2_pose"](oracle, tmp_path, progress=False)
    assert oracle.misses == 0
    assert set(metrics) == {
        "eval.vggface2_pose.frontal_frontal.t1.eer",
        "eval.vggface2_pose.frontal_frontal.t1.frr_far_1e-2",
        "eval.vggface2_pose.frontal_frontal.t1.frr_far_1e-3",
    }  # 2 images per identity: no 5-image template, only the frontal block
    _assert_all(metrics, "", 0.0)
    same = art["same"]["eval.vggface2_pose.frontal_frontal.t1"]
    assert same.sum() == 2 and (~same).sum() == 2  # 1 genuine per user, next-user impostors


# ---------------------------------------------------------------- CLI


def test_cli_evaluate_lfw_prints_every_metric(tmp_path):
    from click.testing import CliRunner

    from vlrface.cli import main

    write_lfw(tmp_path / "lfw")
    args = ["evaluate", "--protocol", "lfw", "--data", str(tmp_path / "lfw")]
    args += ["--model", "binaryfacenet_lce", "--resolutions", "7,14", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    names = {
        f"eval.lfw.{v}.{r}.{m}"
        for v in ("hr_lr", "lr_lr")
        for r in (7, 14)
        for m in ("acc", "acc_std", "tar_far_1e-3")
    }
    assert names <= set(out["metrics"])
    assert all(isinstance(v, float) for v in out["metrics"].values())
    how = out["alignment"]  # raw LFW: the detector by default, fallbacks counted
    assert how["align"] == "auto" and how["landmarks"] == 0
    assert how["detector"] + how["fallback"] == len(set(out_paths(tmp_path / "lfw")))

    plain = CliRunner().invoke(main, [*args[:-1], "--align", "none"])
    assert plain.exit_code == 0, plain.output
    n = len(set(out_paths(tmp_path / "lfw")))
    assert f"alignment: none ({n} faces: 0 by landmarks, 0 by detector, 0 fell back" in plain.stdout
    native = ["evaluate", "--protocol", "tinyface", "--data", str(tmp_path), "--align", "detector"]
    refused = CliRunner().invoke(main, [*native, "--model", "binaryfacenet_lce"])
    assert refused.exit_code == 1 and "tinyface is native low resolution" in refused.output


def out_paths(root):
    from vlrface.data.lfw import read_pairs

    pairs = read_pairs(root)
    return list(pairs.path_a) + list(pairs.path_b)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--protocol", "nope", "--data", "{root}"], "nope"),
        (["--protocol", "lfw", "--data", "{root}/missing"], "missing"),
        (["--protocol", "lfw", "--data", "{root}", "--pairs", "{root}/gone.txt"], "gone.txt"),
    ],
)
def test_cli_evaluate_errors_are_one_line(tmp_path, args, needle):
    from click.testing import CliRunner

    from vlrface.cli import main

    write_lfw(tmp_path)
    full = ["evaluate", *(a.format(root=tmp_path) for a in args), "--model", "binaryfacenet"]
    result = CliRunner().invoke(main, full)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], lines


# ---------------------------------------------------------------- plots


def test_protocol_figures_roc_det_cmc_heatmap(tmp_path):
    from vlrface.reports.plots import protocol_figures

    write_tinyface(tmp_path / "tiny")
    write_ijb_pack(tmp_path / "ijbc")
    write_lfw(tmp_path / "lfw")
    emb = Projection(3)
    m, art = PROTOCOLS["tinyface"](emb, tmp_path / "tiny", resolutions=[8], progress=False)
    curve = art["cmc_curves"]["eval.tinyface.devkit.native"]
    assert curve[0] == m["eval.tinyface.devkit.native.rank1"] and curve[-1] == 1.0
    assert (np.diff(curve) >= 0).all() and len(curve) == 9  # ranks 1..gallery size
    figs = protocol_figures("tinyface", art, "proj")
    assert list(figs) == ["evaluation/cmc_tinyface.png"]
    assert figs["evaluation/cmc_tinyface.png"].axes[0].get_title() == "tinyface: proj"

    _, art = PROTOCOLS["lfw"](emb, tmp_path / "lfw", resolutions=[7], progress=False)
    figs = protocol_figures("lfw", art, "proj")
    assert set(figs) == {"evaluation/roc_lfw.png", "evaluation/det_lfw.png"}
    assert len(figs["evaluation/det_lfw.png"].axes[0].lines) == 2  # hr_lr.7, lr_lr.7

    _, art = PROTOCOLS["ijbc"](emb, tmp_path / "ijbc", resolutions=[8, 16], progress=False)
    figs = protocol_figures("ijbc", art, "proj")
    heat = figs["evaluation/cross_resolution_ijbc_tar_far_1e-3.png"]
    cells = [t.get_text() for t in heat.axes[0].texts]
    expected = [f"{v:.2f}" for v in art["cross_resolution"]["tar_far_1e-3"].ravel()]
    assert cells == expected  # 3 x 3, row = probe resolution
    assert "proj" in heat.axes[0].get_title() and "ijbc" in heat.axes[0].get_title()
    for fig in figs.values():
        fig.savefig(tmp_path / "x.png")  # renders headless


def test_cli_evaluate_registry_uri_picks_the_flatbuffer(tmp_path, monkeypatch):
    """``models:/name@alias``: the version's verified artifacts are fetched and the .tflite inside
    is run by the LCE embedder (stubbed here: the artifact folder is what
    vlrface/registration.py logs; the sha256 checks of the fetch are tested in
    test_model_integrity.py)."""
    from click.testing import CliRunner

    from vlrface import embedders, registry
    from vlrface.cli import main

    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("backbone.keras", "binaryfacenet.tflite", "files.json"):
        (folder / name).write_bytes(b"stub")
    asked, loaded = [], []
    monkeypatch.setattr(
        registry, "fetch_verified", lambda uri, client=None: asked.append(uri) or folder
    )

    class StubLCE(Projection):
        def __init__(self, flatbuffer, num_threads=1):
            super().__init__(4)
            loaded.append(flatbuffer)

    monkeypatch.setattr(embedders, "LCEEmbedder", StubLCE)
    write_lfw(tmp_path / "lfw")
    args = ["evaluate", "--protocol", "lfw", "--data", str(tmp_path / "lfw"), "--json"]
    args += ["--model", "models:/binaryfacenet@champion", "--resolutions", "14"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert asked == ["models:/binaryfacenet@champion"] and loaded == [b"stub"]
    out = json.loads(result.stdout)
    direct, _ = PROTOCOLS["lfw"](Projection(4), tmp_path / "lfw", resolutions=[14], progress=False)
    assert out["metrics"] == pytest.approx(direct)


def test_lfw_from_an_aligned_bin_pack(tmp_path):
    from vlrface.data.fixtures.insightface import write_bin

    images, issame = write_bin(tmp_path / "lfw.bin", pairs=20)
    oracle = Oracle()
    for i, face in enumerate(images):
        p = i // 2
        ident = 100 + p if i % 2 == 0 or issame[p] else 200 + p
        oracle.teach(np.ascontiguousarray(face), str(ident), [14])
    metrics, art = PROTOCOLS["lfw"](
        oracle, tmp_path, bin=tmp_path / "lfw.bin", resolutions=[14], progress=False
    )
    assert oracle.misses == 0
    assert metrics == {
        f"eval.lfw.{v}.14.{m}": value
        for v in ("hr_lr", "lr_lr")
        for m, value in (("acc", 1.0), ("acc_std", 0.0), ("tar_far_1e-3", 1.0))
    }
    assert list(art["fold"]) == [f for f in range(10) for _ in range(2)]  # 10 contiguous folds


# ---------------------------------------------------------------- compare


def test_compare_and_resolution_table(tmp_path):
    from vlrface.reports.compare import compare, resolution_table, to_markdown

    write_lfw(tmp_path)
    a, _ = PROTOCOLS["lfw"](Projection(5), tmp_path, resolutions=[7, 112], progress=False)
    b = {k: v + (0.1 if k.endswith(".acc") else 0.0) for k, v in a.items()}
    b["eval.lfw.hr_lr.7.acc_std"] = a["eval.lfw.hr_lr.7.acc_std"] + 0.05
    df = compare({"a": a, "b": b})
    assert list(df.index) == sorted(a) and list(df.columns) == ["a", "b", "delta", "better"]
    assert df.loc["eval.lfw.hr_lr.7.acc", "better"] == "b"
    assert df.loc["eval.lfw.hr_lr.7.acc_std", "better"] == "a"  # lower is better
    assert df.loc["eval.lfw.lr_lr.7.tar_far_1e-3", "better"] == "="
    table = resolution_table(a, "lfw", "acc")
    assert list(table.index) == ["hr_lr", "lr_lr"] and list(table.columns) == ["7", "112"]
    assert table.loc["lr_lr", "7"] == a["eval.lfw.lr_lr.7.acc"]
    md = to_markdown(table)
    assert md.splitlines()[0] == "| variant | 7 | 112 |" and len(md.splitlines()) == 4
