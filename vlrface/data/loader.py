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
and numpy release the GIL, the Python between them does not), ``kind="process"`` in N spawned
processes (no TF state forked; ``SlotWorkers``, which the PyTorch trainer's process loader uses
too): each gets the loader once, when it starts, then per batch only ``(epoch, step, indices,
slot)``, and normalises the batch straight into a shared-memory slot (one per batch in flight,
mapped once per worker): no batch is pickled. A worker process that dies (killed, out of memory)
is a ``LoaderError`` naming the batch, and the slots are unlinked. ``workers=0``: one background
thread, as before. The pool lives until ``close()`` (or the object is collected).

Zero-copy hand-off (``copy=False``, process workers only): a batch is yielded as arrays that
*are* its shared-memory slot, not a copy of it (9.6 MB a batch of 64 at 112 px the training
process no longer copies). The contract:

* a yielded batch is valid until the consumer asks its generator for the next batch (the
  generator resumes: ``next()``, the next turn of a ``for`` loop); only then does its slot go
  back to the free list, and a worker may overwrite it from then on. A consumer that keeps any
  of its arrays (or anything aliasing them) past that point must copy them first;
* closing or abandoning the generator (``close()``, ``break``, an exception, garbage
  collection) is always safe: it waits for the batches still being written, then unlinks every
  slot; the arrays already yielded keep their memory mapped (each slot's mapping is freed with
  the last array on it, never closed under one: no ``BufferError``) and keep their values, as
  nothing writes to an unlinked slot;
* the arrays are writeable: writing into the batch one holds is harmless (it is the consumer's
  until it asks for the next).

``copy=True`` (default) yields arrays of its own (one copy out of the slot per batch), valid
for ever. Threads (and ``workers=0``) always yield arrays of their own: ``copy`` has no effect.

With ``with_hr`` a batch is ``(x, y, x_hr)``: ``x_hr`` the same faces, flipped alike, before the
degradation (the teacher's input in teacher-student training). With ``teacher_table`` (``(N, 2,
D)``: the frozen teacher's embedding of each training face as is and mirrored, computed once by
``vlrface.training.keras.teacher_table``) the third element is instead the teacher's embedding
of each sample's HR face as the sample was flipped: the teacher is not run per step.
"""

from __future__ import annotations

import mmap
import os
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pandas as pd

from vlrface.degrade import CrossResolutionPolicy, CurriculumPolicy
from vlrface.errors import LoaderError
from vlrface.preprocess import load_face, normalize


class FaceBatches:
    """Shuffled, augmented training batches ``(x float32 NHWC, y int32[, x_hr])``.

    ``copy=False`` (with ``kind="process"``): each batch is views of its shared-memory slot,
    valid until the next batch is asked of the same generator; closing or dropping the generator
    is safe and leaves the batches already yielded intact ("Zero-copy hand-off" above).
    """

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
        copy: bool = True,
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
        self.copy = copy  # False: process batches are views of their slot (module docstring)

    def __getstate__(self):
        return {**self.__dict__, "_pool": None}

    def close(self) -> None:
        if self._pool is not None:
            if isinstance(self._pool, SlotWorkers):
                self._pool.close()
            else:
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
                self._pool = SlotWorkers(self, self.workers)
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

    def _batch(self, epoch: int, step: int, idx: np.ndarray, alloc=np.empty):
        """Batch ``step`` of ``epoch``; its arrays come from ``alloc(shape, dtype)`` (a
        shared-memory slot in a process worker) and are filled in place."""
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
        x = _normalized(imgs, alloc)
        y = alloc(idx.shape, self.labels.dtype)
        np.take(self.labels, idx, out=y)
        if self.teacher_table is not None:
            table = self.teacher_table
            emb = alloc((len(idx), *table.shape[2:]), table.dtype)
            emb[...] = table[idx, flipped]
            return x, y, emb
        return (x, y, _normalized(hr, alloc)) if self.with_hr else (x, y)

    def epoch(self, epoch: int, start: int = 0):
        """Yield the batches ``start, start + 1, ...`` of ``epoch``; the next batch is decoded
        while one trains."""
        order = np.random.default_rng([self.seed, epoch, 0x5E]).permutation(len(self.paths))
        chunks = [order[s * self.batch_size : (s + 1) * self.batch_size] for s in range(len(self))]
        if not 0 <= start <= len(chunks):
            raise ValueError(f"start batch {start} is outside the epoch's {len(chunks)} batches")
        pool = self._executor()
        if isinstance(pool, SlotWorkers):  # the batches come through shared-memory slots
            jobs = ((epoch, s, chunks[s]) for s in range(start, len(chunks)))
            yield from pool.stream(jobs, self._batch_nbytes(), copy=self.copy)
            return
        ahead = max(self.workers, 1)  # batches decoding ahead of the one yielded
        pending = {}
        try:
            for step in range(start, len(chunks)):
                for s in range(step, min(step + ahead + 1, len(chunks))):
                    if s not in pending:
                        pending[s] = pool.submit(self._batch, epoch, s, chunks[s])
                yield pending.pop(step).result()
        finally:
            for future in pending.values():
                future.cancel()
            if self.workers == 0:
                pool.shutdown(wait=True)

    def _batch_nbytes(self) -> int:
        """Bytes of one batch, as ``_batch`` returns it (the size of a shared-memory slot)."""
        b, px = self.batch_size, self.size * self.size * 3 * 4  # float32 HWC
        third = 0
        if self.teacher_table is not None:
            third = b * int(np.prod(self.teacher_table.shape[2:])) * self.teacher_table.itemsize
        elif self.with_hr:
            third = b * px
        return b * px + b * 4 + third + 3 * 64  # alignment padding per array


def _normalized(faces: list[np.ndarray], alloc) -> np.ndarray:
    """``normalize(np.stack(faces))``, written face by face into ``alloc``'s array."""
    out = alloc((len(faces), *faces[0].shape), np.float32)
    for face, dst in zip(faces, out, strict=True):
        normalize(face, out=dst)
    return out


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux: map the pages in one go, not page by page
SLOT_PREFIX = "vlrf"  # shared-memory slots are named f"{SLOT_PREFIX}{pid}_{random hex}"


def _own_map(shm: shared_memory.SharedMemory) -> mmap.mmap:
    """A mapping of ``shm``'s memory of its own. Arrays on it keep it alive; it is never closed,
    only dropped, so it is unmapped with the last array on it: closing ``shm`` (or dropping this
    map) never meets an exported buffer."""
    fd = getattr(shm, "_fd", -1)  # POSIX: the segment's descriptor (mmap keeps a duplicate)
    if fd >= 0:
        return mmap.mmap(fd, shm.size, flags=mmap.MAP_SHARED | _POPULATE)
    return mmap.mmap(-1, shm.size, tagname=shm.name)  # Windows: the same named mapping


class _Slot:
    """One batch's shared memory, created by the training process for one stream (a Keras epoch,
    a PyTorch run)."""

    def __init__(self, size: int):
        # a name of our own (pid + 64 random bits): never reused while a worker may map it
        name = f"{SLOT_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:16]}"
        self.shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        self.name = self.shm.name
        try:
            self.map = _own_map(self.shm)
        except BaseException:
            self.shm.close()
            self.shm.unlink()
            raise

    def array(self, dtype: str, shape: tuple, offset: int) -> np.ndarray:
        """The array a worker wrote at ``offset`` (a view: it keeps the mapping alive)."""
        count = int(np.prod(shape))
        return np.frombuffer(self.map, dtype, count, offset).reshape(shape)

    def release(self) -> None:
        """Unlink the segment; the mapping goes with the last array on it."""
        try:
            self.shm.close()  # its own mapping: never exported
        finally:
            self.shm.unlink()
            self.map = None


_END = object()  # the end of a stream's jobs


class SlotWorkers:
    """``workers`` spawned processes that compute batches straight into shared memory, yielded in
    order: the process pool of both tracks' loaders (``FaceBatches(kind="process")`` and the
    PyTorch trainer's ``vlrface.training.torch.Batches``).

    ``source`` (picklable) goes to each process once, when it starts; a job is a tuple of
    arguments, and the process runs ``source.<method>(*job, alloc=alloc)``, which takes every
    array of the batch from ``alloc(shape, dtype)`` (views of the job's slot, in order) and
    fills it in place; the arrays are the job's batch, what the method returns is ignored.
    ``stream`` yields each job's arrays in the jobs' order, ``workers`` jobs computing ahead of
    the one yielded; the hand-off (``copy``) is the module docstring's. Spawned, not forked: no
    TF or torch state is inherited. The processes live until ``close()``."""

    def __init__(self, source, workers: int, method: str = "_batch"):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if workers < 1:
            raise ValueError(f"SlotWorkers needs workers >= 1, not {workers}")
        self.source, self.workers, self.method = source, workers, method
        ctx = mp.get_context("spawn")
        self.pool = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(source,)
        )

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)

    def _died(self, job) -> LoaderError:
        """The error of a pool whose process died, naming the loader and the job's ``(epoch,
        step)`` (its first two integer arguments, in both loaders' jobs)."""
        ints = [int(a) for a in job if isinstance(a, int | np.integer) and not isinstance(a, bool)]
        return LoaderError(
            f"loader worker process died (killed, or out of memory?) by {type(self.source).__name__}"
            f".{self.method} (epoch, step) {tuple(ints[:2])}: the process loader is broken; "
            "rerun (training resumes from its last checkpoint)"
        )

    def stream(self, jobs, nbytes: int, copy: bool = True):
        """Yield the arrays of each of ``jobs`` (a tuple per job, ``nbytes`` at most), in order.
        ``copy=False``: views of the job's slot, valid until the next is asked (module
        docstring); closing or dropping the generator waits for the jobs being written, then
        unlinks every slot."""
        ahead = self.workers  # jobs computing ahead of the one yielded
        # this stream's slots: one per job in flight, plus the one yielded (a stream abandoned
        # and one started before it is collected never share a slot)
        slots = [_Slot(nbytes) for _ in range(ahead + 1)]
        free = list(range(len(slots)))
        pending: deque = deque()
        jobs = iter(jobs)
        try:
            while True:
                while free and len(pending) < ahead + 1:
                    job = next(jobs, _END)
                    if job is _END:
                        break
                    slot = free.pop()
                    args = (self.method, tuple(job), slots[slot].name, len(slots))
                    try:
                        pending.append((self.pool.submit(_shared_batch, *args), slot, job))
                    except BrokenProcessPool:
                        raise self._died(job) from None
                if not pending:
                    return
                future, slot, job = pending.popleft()
                try:
                    layout = future.result()
                except BrokenProcessPool:
                    raise self._died(job) from None
                batch = tuple(slots[slot].array(*a) for a in layout)
                if copy:
                    batch = tuple(a.copy() for a in batch)
                    free.append(slot)
                    yield batch
                    continue
                yield batch  # views of the slot: the consumer's until it asks for the next
                del batch
                free.append(slot)
        finally:
            for future, *_ in pending:
                future.cancel()
            for future, *_ in pending:  # a slot may still be written: wait for those
                if not future.cancelled():
                    try:
                        future.result()
                    except Exception:
                        pass
            for slot in slots:
                slot.release()


# process workers: the source arrives once per process; a batch goes through shared memory
_WORKER = None  # this process's SlotWorkers source (a FaceBatches, a torch Batches)
_MAPS: dict[str, mmap.mmap] = {}  # this worker's mappings of the slots, most recently used last


def _init_worker(source) -> None:
    global _WORKER
    _WORKER = source


def _slot_map(name: str, keep: int) -> mmap.mmap:
    """This worker's mapping of slot ``name``, made once per slot (not page by page per batch);
    at most ``keep`` kept (an earlier epoch's slots, unlinked, are dropped as new ones come)."""
    mm = _MAPS.pop(name, None)
    if mm is None:
        shm = shared_memory.SharedMemory(name=name)
        try:
            mm = _own_map(shm)
        finally:
            shm.close()
    _MAPS[name] = mm
    while len(_MAPS) > keep:
        del _MAPS[next(iter(_MAPS))]
    return mm


def _shared_batch(method: str, job: tuple, name: str, keep: int) -> list:
    """Run ``_WORKER.<method>(*job)`` in this worker straight into shared memory ``name`` (one
    of ``keep`` slots in use); returns ``[(dtype, shape, offset)]`` per array."""
    mm = _slot_map(name, keep)
    layout, end = [], 0

    def alloc(shape, dtype):
        nonlocal end
        dtype = np.dtype(dtype)
        offset, nbytes = end, int(np.prod(shape)) * dtype.itemsize
        if offset + nbytes > len(mm):
            raise ValueError(f"batch of {offset + nbytes} bytes exceeds its slot ({len(mm)})")
        layout.append((dtype.str, tuple(shape), offset))
        end = offset + -(-nbytes // 64) * 64  # 64-byte aligned arrays
        return np.frombuffer(mm, dtype, int(np.prod(shape)), offset).reshape(shape)

    getattr(_WORKER, method)(*job, alloc=alloc)
    return layout
