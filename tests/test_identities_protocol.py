"""The generic ``identities`` protocol, the content version of untracked data, and the training
helpers real-face fine-tuning uses (teacher embedding table, class-mean head, capped epochs)."""

import cv2
import numpy as np
import pandas as pd
import pytest

from vlrface.data import versioning
from vlrface.data.fixtures.insightface import write_pack
from vlrface.data.records import DataError, identity_split
from vlrface.protocols import runners
from vlrface.protocols.identities import metric_names, read_identities, run_identities
from vlrface.protocols.suite import evaluate_suite, known_metric_names


def pixels(x: np.ndarray) -> np.ndarray:
    """A model-free embedder: the 8x8 mean-pooled face, so synthetic identities separate at
    full resolution and blur together at very low resolution."""
    n = len(x)
    return x.reshape(n, 8, 14, 8, 14, 3).mean(axis=(2, 4)).reshape(n, -1)


def folder_tree(root, identities=6, per=3, seed=0):
    """Identity ``i``: its own random 8x8 pattern, enlarged to 112 px, plus per-image noise."""
    rng = np.random.default_rng(seed)
    for i in range(identities):
        (root / f"{i:03d}").mkdir(parents=True)
        pattern = rng.integers(0, 256, (8, 8, 3)).astype(np.float64)
        big = cv2.resize(pattern, (112, 112), interpolation=cv2.INTER_NEAREST)
        for k in range(per):
            img = np.clip(big + rng.normal(0, 12, big.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / f"{i:03d}" / f"{i:03d}_{k}.png"), img)
    return root


def test_folder_tree_gives_every_metric_and_separates_identities(tmp_path):
    root = folder_tree(tmp_path / "set")
    metrics, art = run_identities(pixels, root, resolutions=(7, 14), progress=False, folds=4)
    assert list(metrics) == metric_names((7, 14))
    assert art["counts"] == {"identities": 6, "probes": 12, "pairs": 24, "negatives_for_far": 60}
    assert metrics["eval.identities.hr_hr.112.rank1"] == 1.0
    assert metrics["eval.identities.hr_hr.112.acc"] > 0.9
    # 7 px destroys what the pixel embedder relies on more than 14 px does
    assert metrics["eval.identities.hr_lr.7.acc"] <= metrics["eval.identities.hr_hr.112.acc"]


def test_gallery_is_each_identitys_first_image(tmp_path):
    root = folder_tree(tmp_path / "set", identities=3, per=2)
    rows = read_identities(root)
    first = rows.groupby("identity").path.first().tolist()
    assert first == ["000/000_0.png", "001/001_0.png", "002/002_0.png"]


def test_pack_hold_out_reads_only_held_out_identities(tmp_path):
    root = tmp_path / "pack"
    write_pack(root, images_per_class=(3, 2, 4, 3, 2, 3, 4, 2))
    everyone = read_identities(root)
    held = read_identities(root, test_fraction=0.5, split_seed=1)
    want = {i for i in everyone.identity.unique() if identity_split(i, 1, 0.5) == "test"}
    assert set(held.identity) == want and 0 < len(want) < everyone.identity.nunique()
    # records in key order within an identity
    keys = held.path.str.extract(r"#(\d+)$")[0].astype(int)
    assert all(np.all(np.diff(k) > 0) for _, k in keys.groupby(held.identity))


def test_bad_roots_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_identities(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no faces"):
        read_identities(tmp_path / "empty")
    one = tmp_path / "one" / "a"
    one.mkdir(parents=True)
    cv2.imwrite(str(one / "x.jpg"), np.zeros((112, 112, 3), np.uint8))
    with pytest.raises(DataError, match=">= 2 identities"):
        run_identities(pixels, tmp_path / "one", progress=False)


def test_registered_with_the_other_protocols(tmp_path):
    root = folder_tree(tmp_path / "set", identities=5, per=3)
    assert "identities" in runners.PROTOCOLS and runners.PROTOCOL_FILES["identities"] == ()
    entry = {"name": "identities", "root": str(root), "resolutions": [14]}
    assert known_metric_names(entry) == metric_names((14,))
    metrics, figures = evaluate_suite(pixels, [entry], tmp_path / "out", progress=False)
    assert sorted(metrics) == sorted(metric_names((14,)))
    assert "eval/identities/roc_identities.png" in figures


def test_content_version_follows_the_bytes(tmp_path):
    root = tmp_path / "pack"
    write_pack(root)
    v1 = versioning.resolve(None, root)
    assert v1.tracked_by == "content-md5" and v1.nfiles == 3
    assert v1 == versioning.resolve(None, root)
    data = bytearray((root / "train.rec").read_bytes())
    data[-1] ^= 1  # one bit of the last image
    (root / "train.rec").write_bytes(bytes(data))
    assert versioning.resolve(None, root).md5 != v1.md5
    with pytest.raises(DataError, match="does not exist"):
        versioning.resolve(None, tmp_path / "nothing")


def test_teacher_table_batches_follow_the_flips(tmp_path):
    from vlrface.data.loader import FaceBatches
    from vlrface.preprocess import load_face, normalize

    root = folder_tree(tmp_path / "set", identities=4, per=4)
    rows = read_identities(root)
    labels = {i: k for k, i in enumerate(sorted(rows.identity.unique()))}
    # row k: k as is, -(k + 1) mirrored, so a batch's value names its row and its flip
    k = np.arange(len(rows), dtype=np.float32)
    table = np.stack([np.repeat(k[:, None], 3, 1), np.repeat(-k[:, None] - 1, 3, 1)], axis=1)
    cached = FaceBatches(root, rows, labels, 4, 0, flip=True, teacher_table=table, max_batches=2)
    plain = FaceBatches(root, rows, labels, 4, 0, flip=True, with_hr=True)
    assert len(cached) == 2 and len(plain) == 4
    flips = 0
    for (x, y, t), (x2, y2, hr) in zip(cached.epoch(0), plain.epoch(0), strict=False):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
        assert t.shape == (4, 3)
        for i, v in enumerate(t[:, 0]):
            row, mirrored = (int(v), False) if v >= 0 else (int(-v - 1), True)
            face = normalize(load_face(root, rows.path[row], 112))
            np.testing.assert_array_equal(hr[i], face[:, ::-1] if mirrored else face)
            flips += mirrored
    assert 0 < flips < 8


def test_embedding_table_is_cached_and_class_means_are_unit_centres(tmp_path):
    from vlrface._keras import tf
    from vlrface.training.keras import class_mean_centres, embedding_table, weights_digest

    root = folder_tree(tmp_path / "set", identities=3, per=2)
    rows = read_identities(root)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((112, 112, 3)),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(4),
        ]  # fmt: skip
    )
    table = embedding_table(model, root, rows.path, 112, True, batch=4, cache_dir=tmp_path / "c")
    assert table.shape == (6, 2, 4) and len(list((tmp_path / "c").glob("*.npy"))) == 1
    # a mirrored face has the same channel means: the pooled model cannot tell them apart
    np.testing.assert_allclose(table[:, 0], table[:, 1], atol=1e-5)
    again = embedding_table(model, root, rows.path, 112, True, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(table, again)
    clone = tf.keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    assert weights_digest(clone) == weights_digest(model)
    codes = pd.factorize(rows.identity)[0]
    centres = class_mean_centres(table, codes, 3)
    assert centres.shape == (4, 3)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=0), 1.0, rtol=1e-5)
