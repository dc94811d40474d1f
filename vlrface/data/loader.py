"""Streaming batches from a manifest: decode, augment (flip, VLR), normalise.

Images are read from disk per batch (nothing is held in memory beyond one prefetched batch), in
an order and with augmentations that are pure functions of ``(seed, epoch)``, so a repeated or
resumed run sees exactly the same batches.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from vlrface.degrade import VLRPolicy
from vlrface.preprocess import load_face, normalize


class FaceBatches:
    """Shuffled, augmented training batches ``(x float32 NHWC, y int32)`` of a manifest."""

    def __init__(
        self,
        root: str | Path,
        manifest: pd.DataFrame,
        labels: dict[str, int],
        batch_size: int,
        seed: int,
        size: int = 112,
        flip: bool = True,
        vlr: VLRPolicy | None = None,
    ):
        if len(manifest) < batch_size:
            raise ValueError(f"batch_size {batch_size} exceeds the {len(manifest)} training images")
        self.root, self.size, self.flip, self.vlr = Path(root), size, flip, vlr
        self.paths = manifest["path"].to_numpy()
        self.labels = manifest["identity"].map(labels).to_numpy(np.int32)
        self.batch_size, self.seed = batch_size, seed

    def __len__(self) -> int:
        return len(self.paths) // self.batch_size  # full batches only

    def _batch(self, epoch: int, step: int, idx: np.ndarray):
        rng = np.random.default_rng([self.seed, epoch, step, 0xB7])
        imgs = []
        for i in idx:
            img = load_face(self.root, self.paths[i], self.size)
            if self.vlr is not None:
                img, _ = self.vlr.apply(img, rng)
            if self.flip and rng.uniform() < 0.5:
                img = img[:, ::-1]
            imgs.append(img)
        return normalize(np.stack(imgs)), self.labels[idx]

    def epoch(self, epoch: int):
        """Yield the batches of ``epoch``; the next batch is decoded while one trains."""
        order = np.random.default_rng([self.seed, epoch, 0x5E]).permutation(len(self.paths))
        chunks = [order[s * self.batch_size : (s + 1) * self.batch_size] for s in range(len(self))]
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._batch, epoch, 0, chunks[0]) if chunks else None
            for step in range(len(chunks)):
                batch = pending.result()
                if step + 1 < len(chunks):
                    pending = pool.submit(self._batch, epoch, step + 1, chunks[step + 1])
                yield batch
