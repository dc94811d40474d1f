"""Distributed training on 2 local processes (CPU, tiny data): the Keras track with
MultiWorkerMirroredStrategy (TF_CONFIG on 127.0.0.1 ports), the PyTorch track with DDP (gloo,
torchrun). Each is compared with one process on the same global batch, a worker is killed
mid-epoch (the run stops naming it, the checkpoint stays) and the rerun resumes from it.

Tolerances: Keras multi-worker vs one process with MirroredStrategy over 2 logical CPUs (the
same 2 replicas, per-replica batch norm): equal to 1e-5. PyTorch DDP vs one process with the
whole global batch: batch norm sees each rank's half batch in DDP, the whole batch in one
process, so the weights match to a stated tolerance (see TORCH_TOL), not exactly.
"""

import numpy as np
import pytest

from vlrface.distributed import (
    DistributedTrainingError,
    train_keras_multi_worker,
    train_torch_ddp,
)

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from vlrface.data.manifest import build_manifest
    from vlrface.data.synthetic import write_casia_layout

    root = write_casia_layout(tmp_path_factory.mktemp("faces"), 6, 4, seed=0, progress=False)
    manifest = build_manifest("casia_webface", root, progress=False)
    manifest["split"] = "train"
    return str(root), manifest


# --------------------------------------------------------------------------------------------
# PyTorch DDP

TORCH_MODEL = {"name": "squeezefaceposenet", "embedding": 16, "input_size": 32}
TORCH_STAGE = dict(
    epochs=2,
    batch_size=8,
    lr=0.05,
    weight_decay=5e-4,
    head={"kind": "arcface", "scale": 8.0},
    schedule={"kind": "step", "milestones": [1], "gamma": 0.5},
    checkpoint_every=1,
    progress=False,
)
# relative L2 distance of all parameters, DDP (BN on 4 rows per rank) vs one process (BN on 8)
TORCH_TOL = 0.05
TORCH_COS = 0.7  # cosine of the two runs' weight updates (measured 0.85 here)


def _flat(model) -> np.ndarray:
    return np.concatenate([v.detach().numpy().ravel() for v in model.state_dict().values()
                           if v.dtype.is_floating_point])  # fmt: skip


@pytest.fixture(scope="module")
def torch_runs(data, tmp_path_factory):
    from vlrface import training_torch as tt
    from vlrface.config.torch import TorchModelConfig, TorchStageConfig

    root, manifest = data
    tt.seed_everything(0)
    start = tt.make_model(TorchModelConfig(**TORCH_MODEL))
    init = tt.save_model(start, TorchModelConfig(**TORCH_MODEL))
    single = tt.train(tt.load_model(init), manifest, root, TorchStageConfig(**TORCH_STAGE), 0,
                      image_size=32)  # fmt: skip
    job = tmp_path_factory.mktemp("ddp")
    ddp, history, steps, _ = train_torch_ddp(
        manifest, root, TORCH_MODEL, TORCH_STAGE, 0, job, processes=2, image_size=32, init=init,
        checkpoint_dir=job / "ckpt",
    )  # fmt: skip
    return start, single, ddp, history, steps, init


def test_torch_ddp_matches_one_process_within_tolerance(torch_runs):
    """DDP's update vs one process's: the same size (gradients averaged, not summed: a sum
    would double it), nearly the same direction, per-epoch losses within 5%."""
    start, single, ddp, history, steps, _ = torch_runs
    assert steps == single.steps == 2 * (24 // 8)
    a, b, s = _flat(ddp), _flat(single.model), _flat(start)
    da, db = a - s, b - s
    print(f"DDP vs one process: rel L2 {np.linalg.norm(a - b) / np.linalg.norm(b):.4f}, update "
          f"norms {np.linalg.norm(da):.3f}/{np.linalg.norm(db):.3f}, cosine "
          f"{da @ db / np.linalg.norm(da) / np.linalg.norm(db):.3f}")  # fmt: skip
    assert np.linalg.norm(db) > 0
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < TORCH_TOL
    assert 0.9 < np.linalg.norm(da) / np.linalg.norm(db) < 1.1
    assert da @ db / np.linalg.norm(da) / np.linalg.norm(db) > TORCH_COS
    np.testing.assert_allclose(
        [h["loss"] for h in history], [h["loss"] for h in single.history], rtol=0.05
    )


def test_torch_worker_death_stops_the_run_and_resume_continues(data, torch_runs, tmp_path):
    root, manifest = data
    *_, ddp, _, _, init = torch_runs
    ckpt = tmp_path / "ckpt"
    with pytest.raises(
        DistributedTrainingError, match=r"torch DDP \(2 processes\): rank 1 exited with status 3"
    ):
        train_torch_ddp(manifest, root, TORCH_MODEL, TORCH_STAGE, 0, tmp_path / "a", processes=2,
                        image_size=32, init=init, checkpoint_dir=ckpt,
                        env={"VLRFACE_DIE_AT": "1:4"})  # fmt: skip
    assert (ckpt / "last.pt").is_file()
    model, _, steps, resumed = train_torch_ddp(
        manifest, root, TORCH_MODEL, TORCH_STAGE, 0, tmp_path / "b", processes=2, image_size=32,
        init=init, checkpoint_dir=ckpt,
    )  # fmt: skip
    assert resumed == 4 and steps == 6
    np.testing.assert_allclose(_flat(model), _flat(ddp), atol=1e-6)


# --------------------------------------------------------------------------------------------
# Keras MultiWorkerMirroredStrategy

KERAS_MODEL = {"name": "binaryfacenet", "channels": 8, "embedding": 16}
KERAS_STAGE = dict(
    epochs=2, batch_size=8, lr=0.01, milestones=[], flip=True, checkpoint_every=1, resume=True
)


@pytest.fixture(scope="module")
def keras_runs(data, tmp_path_factory):
    root, manifest = data
    ref_dir, mw_dir = tmp_path_factory.mktemp("mirrored"), tmp_path_factory.mktemp("mw")
    ref_stage = {**KERAS_STAGE, "checkpoint_dir": str(ref_dir / "ckpt")}
    ref = train_keras_multi_worker(manifest, root, KERAS_MODEL, ref_stage, 0, ref_dir,
                                   workers=2, one_process=True)  # fmt: skip
    stage = {**KERAS_STAGE, "checkpoint_dir": str(mw_dir / "ckpt")}
    mw = train_keras_multi_worker(manifest, root, KERAS_MODEL, stage, 0, mw_dir, workers=2)
    return ref, mw, mw_dir


def test_keras_multi_worker_equals_one_process_with_the_same_replicas(keras_runs):
    (ref_w, ref_c, ref_h), (mw_w, mw_c, mw_h), mw_dir = keras_runs
    assert len(ref_w) == len(mw_w)
    for a, b in zip(ref_w, mw_w, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ref_c, mw_c, rtol=1e-5, atol=1e-5)
    assert [h["epoch"] for h in mw_h] == [1, 2]
    np.testing.assert_allclose([h["loss"] for h in mw_h], [h["loss"] for h in ref_h], rtol=1e-5)
    # the chief alone wrote checkpoints, the last one the finished stage
    assert (mw_dir / "ckpt" / "latest").read_text() == "ckpt-000000006"


def test_keras_worker_death_stops_the_run_and_resume_continues(data, keras_runs, tmp_path):
    root, manifest = data
    _, (mw_w, _, _), _ = keras_runs
    stage = {**KERAS_STAGE, "checkpoint_dir": str(tmp_path / "ckpt")}
    with pytest.raises(DistributedTrainingError, match=r"worker 1 exited with status 3"):
        train_keras_multi_worker(manifest, root, KERAS_MODEL, stage, 0, tmp_path / "a",
                                 workers=2, env={"VLRFACE_DIE_AT": "1:4"})  # fmt: skip
    latest = (tmp_path / "ckpt" / "latest").read_text()
    assert latest in {"ckpt-000000003", "ckpt-000000004"}  # the chief may have saved step 4
    w, _, history = train_keras_multi_worker(manifest, root, KERAS_MODEL, stage, 0,
                                             tmp_path / "b", workers=2)  # fmt: skip
    assert len(history) == 2
    for a, b in zip(w, mw_w, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
