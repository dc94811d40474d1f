"""Streaming batches from a manifest: decode, augment (VLR policy, flip), normalise.

Images are read from disk per batch (nothing is held in memory beyond one prefetched batch), in
an order and with augmentations that are pure functions of ``(seed, epoch, step)``, so a repeated
or resumed run sees exactly the same batches: ``epoch(e, start=s)`` continues an epoch at batch
``s`` (the data position a checkpoint stores).

The degradation policy (``vlrface.degrade``) is applied as its kind asks:

* ``VLRPolicy`` / ``MassoliPolicy``: per sample, with the batch's generator
  ``default_rng([seed, epoch, step, 0xB7])`` (draws: policy, then flip, sample by sample);
* ``CurriculumPolicy``: per sample, evaluated at the global step ``epoch * len(self) + step``
  (its ``total_steps`` is the stage's, so p rises from ``start`` to ``end`` over the stage);
* ``CrossResolutionPolicy``: per batch (``apply_batch``): exactly ``round(share * batch)``
  degraded samples in every batch.

Workers: a batch is a pure function of ``(seed, epoch, step)``, so ``workers=N`` decodes,
degrades and stacks N batches at once and yields them in order: the batches are the same, bit for
bit, whatever ``N``. ``kind="thread"`` (default) runs them in N threads (OpenCV's decode/resize
and numpy release the GIL; no copies between processes), ``kind="process"`` in N spawned
processes (no TF state forked; each batch is pickled back). ``workers=0``: one background
thread, as before. The pool lives until ``close()`` (or the object is collected).

With ``with_hr`` a batch is ``(x, y, x_hr)``: ``x_hr`` the same faces, flipped alike, before the
degradation (the teacher's input in teacher-student training). With ``teacher_table`` (``(N, 2,
D)``: the frozen teacher's embedding of each training face as is and mirrored, computed once by
``vlrface.training.keras.teacher_table``) the third element is instead the teacher's embedding of each
sample's HR face as the sample was flipped: the teacher is not run per step.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from vlrface.degrade import CrossResolutionPolicy, CurriculumPolicy
from vlrface.preprocess import load_face, normalize


class FaceBatches:
    """Shuffled, augmented training batches ``(x float32 NHWC, y int32[, x_hr])``."""

    def __init__(
        self,
        root: str | Path,
        manifest: pd.DataFrame,
        labels: dict[str, int],
        batch_size: int,
        seed: int,
        size: int = 112,
        flip: bool = True,
        vlr=None,
        with_hr: bool = False,
        workers: int = 0,
        kind: str = "thread",
        teacher_table: np.ndarray | None = None,
        max_batches: int | None = None,
    ):
        if len(manifest) < batch_size:
            raise ValueError(f"batch_size {batch_size} exceeds the {len(manifest)} training images")
        self.root, self.size, self.flip, self.vlr = Path(root), size, flip, vlr
        self.with_hr = with_hr or teacher_table is not None
        if teacher_table is not None and teacher_table.shape[:2] != (len(manifest), 2):
            raise ValueError(
                f"teacher_table has shape {teacher_table.shape}, expected ({len(manifest)}, 2, D)"
            )
        self.teacher_table = teacher_table
        self.paths = manifest["path"].to_numpy()
        self.labels = manifest["identity"].map(labels).to_numpy(np.int32)
        self.batch_size, self.seed = batch_size, seed
        self.max_batches = max_batches
        if workers < 0:
            raise ValueError(f"workers must be >= 0, not {workers}")
        if kind not in ("thread", "process"):
            raise ValueError(f"kind must be 'thread' or 'process', not {kind!r}")
        self.workers, self.kind, self._pool = workers, kind, None

    def __getstate__(self):
        return {**self.__dict__, "_pool": None}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _executor(self):
        if self.workers == 0:
            return ThreadPoolExecutor(max_workers=1)
        if self._pool is None:
            if self.kind == "process":
                import multiprocessing as mp
                from concurrent.futures import ProcessPoolExecutor

                ctx = mp.get_context("spawn")
                self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
            else:
                self._pool = ThreadPoolExecutor(self.workers)
        return self._pool

    def __len__(self) -> int:
        full = len(self.paths) // self.batch_size  # full batches only
        # an epoch capped at max_batches: the first batches of the epoch's permutation
        return full if self.max_batches is None else min(full, self.max_batches)

    def policy_at(self, epoch: int, step: int):
        """The policy as applied to batch ``step`` of ``epoch`` (a curriculum at its step)."""
        if isinstance(self.vlr, CurriculumPolicy):
            return self.vlr.at(epoch * len(self) + step)
        return self.vlr

    def _batch(self, epoch: int, step: int, idx: np.ndarray):
        rng = np.random.default_rng([self.seed, epoch, step, 0xB7])
        policy = self.policy_at(epoch, step)
        hr = [load_face(self.root, self.paths[i], self.size) for i in idx]
        if isinstance(policy, CrossResolutionPolicy):
            imgs, _ = policy.apply_batch(hr, self.seed, epoch, step)
        elif policy is not None:
            imgs = [None] * len(hr)
        else:
            imgs = list(hr)
        flipped = np.zeros(len(hr), np.int64)
        for i in range(len(hr)):
            if imgs[i] is None:
                imgs[i], _ = policy.apply(hr[i], rng)
            if self.flip and rng.uniform() < 0.5:
                imgs[i], hr[i] = imgs[i][:, ::-1], hr[i][:, ::-1]
                flipped[i] = 1
        x, y = normalize(np.stack(imgs)), self.labels[idx]
        if self.teacher_table is not None:
            return x, y, self.teacher_table[idx, flipped]
        return (x, y, normalize(np.stack(hr))) if self.with_hr else (x, y)

    def epoch(self, epoch: int, start: int = 0):
        """Yield the batches ``start, start + 1, ...`` of ``epoch``; the next batch is decoded
        while one trains."""
        order = np.random.default_rng([self.seed, epoch, 0x5E]).permutation(len(self.paths))
        chunks = [order[s * self.batch_size : (s + 1) * self.batch_size] for s in range(len(self))]
        if not 0 <= start <= len(chunks):
            raise ValueError(f"start batch {start} is outside the epoch's {len(chunks)} batches")
        pool = self._executor()
        ahead = max(self.workers, 1)  # batches decoding ahead of the one yielded
        pending: dict[int, object] = {}
        try:
            for step in range(start, len(chunks)):
                for s in range(step, min(step + ahead + 1, len(chunks))):
                    if s not in pending:
                        pending[s] = pool.submit(self._batch, epoch, s, chunks[s])
                yield pending.pop(step).result()
        finally:
            for f in pending.values():
                f.cancel()
            if self.workers == 0:
                pool.shutdown(wait=True)
