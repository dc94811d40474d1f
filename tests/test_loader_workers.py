"""The training loader's worker processes: the same batches, bit for bit, whatever their number
(a batch is a pure function of seed, epoch and step), and a resumed epoch starts where it should."""

import gc
import os
import sys
import time

import numpy as np
import pytest

from vlrface.data.loader import FaceBatches
from vlrface.data.records import label_map
from vlrface.degrade import VLRPolicy


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from vlrface.data.manifest import build_manifest
    from vlrface.data.synthetic import write_casia_layout

    root = write_casia_layout(tmp_path_factory.mktemp("faces"), 5, 4, seed=1, progress=False)
    return root, build_manifest("casia_webface", root, progress=False)


def _epoch(faces, workers, epoch=1, start=0, kind="thread"):
    root, manifest = faces
    batches = FaceBatches(root, manifest, label_map(manifest), 4, seed=7, size=56,
                          vlr=VLRPolicy(probability=0.7, sizes=(7, 14)), with_hr=True,
                          workers=workers, kind=kind)  # fmt: skip
    try:
        return list(batches.epoch(epoch, start=start))
    finally:
        batches.close()


def test_batches_are_the_same_whatever_the_workers(faces):
    one = _epoch(faces, 0)
    assert len(one) == 5
    for workers, kind in ((1, "thread"), (2, "thread"), (1, "process"), (2, "process")):
        got = _epoch(faces, workers, kind=kind)
        assert len(got) == len(one)
        for a, b in zip(one, got, strict=True):
            for x, y in zip(a, b, strict=True):
                assert x.dtype == y.dtype and np.array_equal(x, y)
    resumed = _epoch(faces, 2, start=3)
    for a, b in zip(one[3:], resumed, strict=True):
        assert np.array_equal(a[0], b[0])


def test_process_workers_abandon_an_epoch_and_resume(faces):
    """An epoch left mid-way (its shared-memory slots released) and the same epoch resumed from
    the next batch in a new generator: the batches continue as one epoch would."""
    root, manifest = faces
    one = _epoch(faces, 0)
    batches = FaceBatches(root, manifest, label_map(manifest), 4, seed=7, size=56,
                          vlr=VLRPolicy(probability=0.7, sizes=(7, 14)), with_hr=True,
                          workers=2, kind="process")  # fmt: skip
    try:
        first = batches.epoch(1)
        got = [next(first), next(first)]
        first.close()  # abandoned: waits for the batches in flight, frees its slots
        got += list(batches.epoch(1, start=2))
    finally:
        batches.close()
    for a, b in zip(one, got, strict=True):
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y)


def test_negative_workers_is_refused(faces):
    root, manifest = faces
    with pytest.raises(ValueError, match="workers must be >= 0"):
        FaceBatches(root, manifest, label_map(manifest), 4, seed=0, workers=-1)


def test_a_keras_stage_trains_the_same_whatever_the_loader(faces):
    """``loader_workers`` / ``loader_kind`` in a stage: one background thread, 2 threads and 2
    spawned processes give the same weights and figures, bit for bit, for one seed."""
    from vlrface.config.keras import ModelConfig, StageConfig
    from vlrface.training.keras import run_stage

    root, manifest = faces
    manifest = manifest.assign(split="train")
    model = ModelConfig(name="binaryfacenet", channels=8, embedding=16)
    runs = []
    for workers, kind in ((0, "thread"), (2, "thread"), (2, "process")):
        stage = StageConfig(epochs=1, batch_size=4, lr=0.01, schedule={"kind": "constant"},
                            degrade={"kind": "fixed", "probability": 0.7, "sizes": [7, 14]},
                            loader_workers=workers, loader_kind=kind)  # fmt: skip
        backbone, centres, history = run_stage(manifest, str(root), model, stage, 5,
                                               progress=False)  # fmt: skip
        runs.append((backbone.get_weights() + [centres], history))
    (first, history), *others = runs
    for weights, other_history in others:
        assert other_history == history
        for a, b in zip(first, weights, strict=True):
            assert np.array_equal(a, b)


def _shm_slots() -> set[str]:
    """This process's loader slots in /dev/shm (Linux)."""
    from vlrface.data.loader import SLOT_PREFIX

    mine = f"{SLOT_PREFIX}{os.getpid()}_"
    return {n for n in os.listdir("/dev/shm") if n.startswith(mine)}


@pytest.mark.parametrize("workers", [1, 2])
def test_zero_copy_batches_equal_the_copied_ones_until_the_next_is_asked(faces, workers):
    """``copy=False``: process batches are views of their shared-memory slot, bit for bit the
    copied ones, and a batch stays intact while the workers write the next ones (it is the
    consumer's until it asks for the next)."""
    root, manifest = faces
    want = _epoch(faces, 0)
    batches = FaceBatches(root, manifest, label_map(manifest), 4, seed=7, size=56,
                          vlr=VLRPolicy(probability=0.7, sizes=(7, 14)), with_hr=True,
                          workers=workers, kind="process", copy=False)  # fmt: skip
    try:
        got = 0
        for batch, ref in zip(batches.epoch(1), want, strict=True):
            assert not any(a.flags.owndata for a in batch)  # views, not copies
            time.sleep(0.2)  # the batches ahead land in the other slots meanwhile
            for x, y in zip(ref, batch, strict=True):
                assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
            got += 1
        assert got == len(want)
    finally:
        batches.close()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm (Linux)")
def test_zero_copy_epoch_abandoned_with_batches_held_closes_cleanly(faces):
    """Closing, or dropping, an epoch while its views are held: no exception (no BufferError),
    every slot unlinked at once, and the held batches keep their values."""
    root, manifest = faces
    want = _epoch(faces, 0)
    batches = FaceBatches(root, manifest, label_map(manifest), 4, seed=7, size=56,
                          vlr=VLRPolicy(probability=0.7, sizes=(7, 14)), with_hr=True,
                          workers=2, kind="process", copy=False)  # fmt: skip
    raised = []
    hook, sys.unraisablehook = sys.unraisablehook, raised.append
    try:
        assert not _shm_slots()
        first = batches.epoch(1)
        held = [next(first), next(first)]
        assert len(_shm_slots()) == 3  # two batches in flight + the one held
        first.close()  # abandoned with batch 1 held
        assert not _shm_slots()
        second = batches.epoch(1, start=2)
        held.append(next(second))
        del second  # dropped, not closed: the garbage collector ends it
        gc.collect()
        assert not _shm_slots()
        time.sleep(0.2)
        for got, ref in zip(held[1:], want[1:3], strict=True):
            for x, y in zip(ref, got, strict=True):
                assert np.array_equal(x, y)
        del held, got, x, y
        gc.collect()
    finally:
        sys.unraisablehook = hook
        batches.close()
    assert not raised, [r.exc_value for r in raised]
    assert not _shm_slots()


def test_a_dead_process_worker_is_a_clear_error_and_frees_the_slots(faces):
    """A worker process killed mid-epoch (out of memory, say): the next batch raises
    ``LoaderError`` naming the loader and the batch, and the epoch's slots are unlinked."""
    import signal

    from vlrface.errors import LoaderError

    root, manifest = faces
    batches = FaceBatches(root, manifest, label_map(manifest), 4, seed=7, size=56,
                          vlr=VLRPolicy(probability=0.7, sizes=(7, 14)), with_hr=True,
                          workers=2, kind="process")  # fmt: skip
    try:
        epoch = batches.epoch(1)
        next(epoch)
        pool = batches._pool.pool
        os.kill(next(iter(pool._processes)), signal.SIGKILL)  # one of this test's own workers
        for _ in range(200):  # the pool notices the death
            if pool._broken:
                break
            time.sleep(0.05)
        with pytest.raises(LoaderError, match=r"loader worker process died .*FaceBatches\._batch"):
            list(epoch)
        if os.path.isdir("/dev/shm"):
            assert not _shm_slots()
    finally:
        batches.close()
