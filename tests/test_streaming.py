"""Streaming adapters: tf.data and PyTorch give the same pixels, deterministically, lazily."""

import hashlib
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from vlrface.data import casia, insightface, records, tinyface
from vlrface.data.fixtures.insightface import write_pack
from vlrface.data.fixtures.tinyface import write_tinyface
from vlrface.data.streaming import FaceSource, TorchFaces, tf_dataset
from vlrface.data.synthetic import write_casia_layout
from vlrface.degrade import VLRPolicy
from vlrface.preprocess import load_rgb, normalize

VLR = VLRPolicy(probability=0.7, sizes=(7, 14, 28))


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = write_casia_layout(tmp_path_factory.mktemp("s") / "faces", 3, 3, seed=4, progress=False)
    return root, casia.read_manifest(root, progress=False)


def test_tf_and_torch_give_the_same_pixels_as_the_project_preprocessing(faces):
    root, manifest = faces
    source = FaceSource(root, manifest, vlr=VLR, flip=True, seed=7)
    from_tf = list(tf_dataset(source, epoch=2).as_numpy_iterator())
    torch_ds = TorchFaces(source, epoch=2)
    assert len(from_tf) == len(torch_ds) == len(manifest) == 9
    for i, (x, y) in enumerate(from_tf):
        tx, ty = torch_ds[i]
        assert tx.shape == (3, 112, 112) and np.array_equal(x, tx.permute(1, 2, 0).numpy())
        assert y == ty == sorted(set(manifest.identity)).index(manifest.identity[i])
        rng = np.random.default_rng([7, 2, i])  # the documented per-sample stream
        img, _ = VLR.apply(load_rgb(root / manifest.path[i], 112), rng)
        if rng.uniform() < 0.5:
            img = img[:, ::-1]
        assert np.array_equal(x, normalize(img))


def test_samples_depend_on_seed_epoch_and_index_only(faces):
    import torch

    root, manifest = faces
    source = FaceSource(root, manifest, vlr=VLR, flip=True, seed=7)
    forward = [source.sample(i, epoch=1)[0] for i in range(len(source))]
    backward = [source.sample(i, epoch=1)[0] for i in reversed(range(len(source)))][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(forward, backward, strict=True))
    other = [source.sample(i, epoch=3)[0] for i in range(len(source))]
    assert not all(np.array_equal(a, b) for a, b in zip(forward, other, strict=True))
    ds = TorchFaces(source)
    ds.set_epoch(1)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = torch.cat([x for x, _ in loader]).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(batches, np.stack(forward))  # worker processes, same pixels


def test_unlabelled_rows_and_native_low_resolution(tmp_path):
    write_tinyface(tmp_path / "t")
    manifest = tinyface.read_manifest(tmp_path / "t", progress=False)
    source = FaceSource(tmp_path / "t", manifest, size=64)
    distractor = manifest.index[manifest.split == "distractor"][0]
    x, y = source.sample(distractor)
    assert y == -1 and x.shape == (64, 64, 3) and x.dtype == np.float32
    known = source.labels[source.labels >= 0]
    assert sorted(set(known)) == list(range(manifest.identity[manifest.identity != ""].nunique()))


def test_nothing_is_decoded_up_front_and_memory_stays_per_path(faces):
    root, manifest = faces
    n = 100_000  # rows 0..8 are real images; the rest name files that do not exist
    rows = pd.DataFrame(
        {
            "path": [*manifest.path, *(f"missing/{i:06d}.jpg" for i in range(n - 9))],
            "identity": [*manifest.identity, *(str(i % 5000) for i in range(n - 9))],
        }
    )
    import tensorflow  # noqa: F401  (imported before tracing: its own import is not the data)

    tracemalloc.start()
    source = FaceSource(root, rows, vlr=VLR)
    ds, torch_ds = tf_dataset(source), TorchFaces(source)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 100k decoded 112x112x3 float32 faces would be 15 GB; paths and labels are ~3 MB
    assert peak < 40e6, f"{peak / 1e6:.1f} MB"
    assert source.paths.nbytes + source.labels.nbytes < 3e6
    x, _ = next(iter(ds.take(1)))
    assert x.shape == (112, 112, 3)
    with pytest.raises(Exception, match=r"missing/050000\.jpg"):
        torch_ds[50_009]


def test_insightface_pack_streams_in_worker_processes(tmp_path):
    import torch

    root = tmp_path / "ms1m-retinaface-t1"
    write_pack(root)  # one record is split into 3 chunks by magic words inside its JPEG
    manifest = insightface.read_manifest(root, progress=False)
    for path, sha in zip(manifest.path, manifest.sha256, strict=True):
        assert hashlib.sha256(records.read_bytes(root, path)).hexdigest() == sha
    source = FaceSource(root, manifest, vlr=VLR, flip=True, seed=3)
    from_tf = np.stack([x for x, _ in tf_dataset(source, epoch=1).as_numpy_iterator()])
    # the parent has the pack open already; forked workers must open their own
    loader = torch.utils.data.DataLoader(TorchFaces(source, epoch=1), batch_size=4, num_workers=2)
    from_torch = torch.cat([x for x, _ in loader]).permute(0, 2, 3, 1).numpy()
    assert from_tf.shape == (len(manifest), 112, 112, 3) and np.array_equal(from_tf, from_torch)
