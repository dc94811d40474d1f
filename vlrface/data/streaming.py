"""Stream faces from a manifest into TensorFlow or PyTorch without loading the dataset.

``FaceSource`` keeps only what indexing needs: the dataset root, the ``path`` column as a
compact bytes array and the int32 labels (MS1MV3's 5.1 M rows: ~100 MB, no pixels). An image is
read (``records.read_bytes``: a file, or a record of an insightface ``.rec`` pack), decoded and
preprocessed only when its index is asked for. Both adapters call the same ``FaceSource.sample``:

* ``tf_dataset``: ``tf.data.Dataset.range(n)`` mapped through ``tf.py_function``, so the graph
  holds no paths and no pixels;
* ``TorchFaces``: a map-style dataset for ``torch.utils.data.DataLoader``. It holds no open file
  or pack handle, so it pickles into worker processes, and each worker opens what it reads itself.

Preprocessing is ``decode -> RGB -> resize to size x size (INTER_AREA, ``preprocess.decode_rgb``)
-> optional VLRPolicy -> optional horizontal flip -> preprocess.normalize``. The random draws of
sample ``index`` in ``epoch`` come from ``np.random.default_rng([seed, epoch, index])``, so a
sample is the same whichever adapter, worker, order or batch produces it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vlrface.data import records
from vlrface.degrade import VLRPolicy
from vlrface.preprocess import decode_rgb, normalize


class FaceSource:
    """Index -> ``(normalised HxWx3 float32 face, int label)`` over a manifest.

    ``labels`` maps identities to class ids (default ``records.label_map`` of the manifest);
    rows whose identity it lacks (distractors, unmated probes) get label -1.
    """

    def __init__(
        self,
        root: str | Path,
        manifest: pd.DataFrame,
        *,
        labels: dict[str, int] | None = None,
        size: int = 112,
        vlr: VLRPolicy | None = None,
        flip: bool = False,
        seed: int = 0,
    ):
        self.root, self.size, self.vlr, self.flip, self.seed = Path(root), size, vlr, flip, seed
        self.paths = np.array(manifest["path"].str.encode("utf-8").to_numpy(), dtype=np.bytes_)
        known = manifest[manifest["identity"] != ""]
        labels = records.label_map(known) if labels is None else labels
        self.labels = manifest["identity"].map(labels).fillna(-1).to_numpy(np.int32)

    def __len__(self) -> int:
        return len(self.paths)

    def sample(self, index: int, epoch: int = 0) -> tuple[np.ndarray, int]:
        """The preprocessed face of row ``index`` as drawn in ``epoch``."""
        path = self.paths[index].decode("utf-8")
        raw = records.read_bytes(self.root, path)
        img = decode_rgb(raw, self.size, f"{self.root / path}")
        rng = np.random.default_rng([self.seed, epoch, index])
        if self.vlr is not None:
            img, _ = self.vlr.apply(img, rng)
        if self.flip and rng.uniform() < 0.5:
            img = img[:, ::-1]
        return normalize(img), int(self.labels[index])


def tf_dataset(source: FaceSource, epoch: int = 0, parallel: int | None = None):
    """A ``tf.data.Dataset`` of ``(x float32 HxWx3, y int32)`` in manifest order.

    Shuffle, batch and prefetch it as usual (``ds.shuffle(...).batch(...)``); a sample's pixels
    depend on ``(seed, epoch, index)`` only. ``parallel`` decodes that many samples at once
    (default ``tf.data.AUTOTUNE``), keeping the order.
    """
    import tensorflow as tf

    def load(index):
        x, y = source.sample(int(index.numpy()), epoch)
        return x, np.int32(y)

    def mapped(index):
        x, y = tf.py_function(load, [index], (tf.float32, tf.int32))
        x.set_shape((source.size, source.size, 3))
        y.set_shape(())
        return x, y

    return tf.data.Dataset.range(len(source)).map(
        mapped, num_parallel_calls=parallel or tf.data.AUTOTUNE, deterministic=True
    )


class TorchFaces:
    """A map-style PyTorch dataset: ``dataset[i] -> (x float32 3xHxW tensor, y int)``.

    Call ``set_epoch(e)`` before each epoch (as with ``DistributedSampler``); with
    ``persistent_workers`` the workers keep their copy, so recreate the ``DataLoader`` instead.
    """

    def __init__(self, source: FaceSource, epoch: int = 0):
        self.source, self.epoch = source, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        import torch

        x, y = self.source.sample(index, self.epoch)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), y
