"""Distributed training on 2 local processes (CPU, tiny data): the Keras track with
MultiWorkerMirroredStrategy (TF_CONFIG on 127.0.0.1 ports), the PyTorch track with DDP (gloo,
torchrun). Both run as a pipeline's training step runs them: ``run_stage`` of a stage configured
with ``strategy: multi_worker`` / ``ddp: true`` and ``processes: 2``. Each is compared with one
process on the same global batch, a worker is killed mid-epoch (the run stops naming it, the
checkpoint stays) and the rerun resumes from it.

Tolerances: Keras multi-worker vs one process with MirroredStrategy over 2 logical CPUs (the
same 2 replicas, per-replica batch norm): equal to 1e-5. PyTorch DDP vs one process with the
whole global batch: batch norm sees each rank's half batch in DDP, the whole batch in one
process, so the weights match to a stated tolerance (see TORCH_TOL), not exactly.
"""

import numpy as np
import pytest

from vlrface.distributed import DistributedTrainingError, train_keras_multi_worker

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


def _torch_stage(ckpt, **extra):
    from vlrface.config.torch import TorchStageConfig

    return TorchStageConfig(**TORCH_STAGE, ddp=True, processes=2, checkpoint_dir=str(ckpt),
                            **extra)  # fmt: skip


@pytest.fixture(scope="module")
def torch_runs(data, tmp_path_factory):
    from vlrface.config.torch import TorchModelConfig, TorchStageConfig
    from vlrface.training import torch as tt

    root, manifest = data
    tt.seed_everything(0)
    start = tt.make_model(TorchModelConfig(**TORCH_MODEL))
    init = tt.save_model(start, TorchModelConfig(**TORCH_MODEL))
    single = tt.train(tt.load_model(init), manifest, root, TorchStageConfig(**TORCH_STAGE), 0,
                      image_size=32)  # fmt: skip
    # the pipeline's entry point (steps.training.finetune_torch): ddp: true, processes: 2
    ckpt, epochs = tmp_path_factory.mktemp("ddp") / "ckpt", []
    run = tt.run_stage("finetune", manifest, root, 32, TorchModelConfig(**TORCH_MODEL),
                       _torch_stage(ckpt), 0, init=init,
                       on_epoch=lambda e, r: epochs.append((e, r)))  # fmt: skip
    return start, single, run, epochs, init, ckpt


def test_torch_ddp_matches_one_process_within_tolerance(torch_runs):
    """DDP's update vs one process's: the same size (gradients averaged, not summed: a sum
    would double it), nearly the same direction, per-epoch losses within 5%."""
    from vlrface.training import torch as tt

    start, single, run, epochs, _, ckpt = torch_runs
    ddp, history, steps = tt.load_model(run.model), run.history, run.steps
    assert steps == single.steps == 2 * (24 // 8) == run.metrics["finetune.steps"]
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
    # rank 0's epochs reached the caller's callback (MLflow in a pipeline) as in one process
    assert epochs == [(i + 1, h) for i, h in enumerate(history)]
    assert "finetune.resumed_from_step" not in run.tags
    assert not ckpt.exists()  # a finished stage removes its crash-recovery folder


def test_torch_worker_death_stops_the_run_and_resume_continues(data, torch_runs, tmp_path,
                                                               monkeypatch):  # fmt: skip
    from vlrface.config.torch import TorchModelConfig
    from vlrface.training import torch as tt

    root, manifest = data
    _, _, run, _, init, _ = torch_runs
    ckpt = tmp_path / "ckpt"
    monkeypatch.setenv("VLRFACE_DIE_AT", "1:4")  # the workers' environment: rank 1, step 4
    with pytest.raises(
        DistributedTrainingError, match=r"torch DDP \(2 processes\): rank 1 exited with status 3"
    ):
        tt.run_stage("finetune", manifest, root, 32, TorchModelConfig(**TORCH_MODEL),
                     _torch_stage(ckpt), 0, init=init)  # fmt: skip
    assert (ckpt / "last.pt").is_file()
    monkeypatch.delenv("VLRFACE_DIE_AT")
    again = tt.run_stage("finetune", manifest, root, 32, TorchModelConfig(**TORCH_MODEL),
                         _torch_stage(ckpt), 0, init=init)  # fmt: skip
    assert again.tags["finetune.resumed_from_step"] == "4" and again.steps == 6
    np.testing.assert_allclose(
        _flat(tt.load_model(again.model)), _flat(tt.load_model(run.model)), atol=1e-6
    )


# --------------------------------------------------------------------------------------------
# Keras MultiWorkerMirroredStrategy

KERAS_MODEL = {"name": "binaryfacenet", "channels": 8, "embedding": 16}
KERAS_STAGE = dict(
    epochs=2,
    batch_size=8,
    lr=0.01,
    schedule={"kind": "constant"},
    flip=True,
    checkpoint_every=1,
    resume=True,
)


@pytest.fixture(scope="module")
def keras_runs(data, tmp_path_factory):
    from vlrface.config.keras import ModelConfig, StageConfig
    from vlrface.training.keras import run_stage

    root, manifest = data
    ref_dir, mw_dir = tmp_path_factory.mktemp("mirrored"), tmp_path_factory.mktemp("mw")
    ref_stage = {**KERAS_STAGE, "checkpoint_dir": str(ref_dir / "ckpt")}
    ref = train_keras_multi_worker(manifest, root, KERAS_MODEL, ref_stage, 0, ref_dir,
                                   workers=2, one_process=True)  # fmt: skip
    # the pipeline's entry point (steps.training.pretrain_model): multi_worker, processes: 2
    stage = StageConfig(**KERAS_STAGE, strategy="multi_worker", processes=2,
                        checkpoint_dir=str(mw_dir / "ckpt"))  # fmt: skip
    starts, epochs = [], []
    backbone, centres, history = run_stage(
        manifest, root, ModelConfig(**KERAS_MODEL), stage, 0, desc="pretrain",
        on_start=starts.append, on_epoch=lambda e, r: epochs.append((e, r)),
    )  # fmt: skip
    return ref, (backbone.get_weights(), centres, history), mw_dir, starts, epochs


def test_keras_multi_worker_equals_one_process_with_the_same_replicas(keras_runs):
    (ref_w, ref_c, ref_h), (mw_w, mw_c, mw_h), mw_dir, starts, epochs = keras_runs
    assert len(ref_w) == len(mw_w)
    for a, b in zip(ref_w, mw_w, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ref_c, mw_c, rtol=1e-5, atol=1e-5)
    assert [h["epoch"] for h in mw_h] == [1, 2]
    np.testing.assert_allclose([h["loss"] for h in mw_h], [h["loss"] for h in ref_h], rtol=1e-5)
    # the chief alone wrote checkpoints, the last one the finished stage
    assert (mw_dir / "ckpt" / "latest").read_text() == "ckpt-000000006"
    # what one process reports reached the callbacks: the run's settings, then each epoch
    (info,) = starts
    assert (info["strategy"], info["processes"], info["replicas"]) == ("multi_worker", 2, 2)
    assert info["total_steps"] == 6
    assert epochs == [(i, h) for i, h in enumerate(mw_h)]


def test_keras_worker_death_stops_the_run_and_resume_continues(data, keras_runs, tmp_path,
                                                               monkeypatch):  # fmt: skip
    from vlrface.config.keras import ModelConfig, StageConfig
    from vlrface.training.keras import run_stage

    root, manifest = data
    _, (mw_w, _, _), *_ = keras_runs
    stage = StageConfig(**KERAS_STAGE, strategy="multi_worker", processes=2,
                        checkpoint_dir=str(tmp_path / "ckpt"))  # fmt: skip
    monkeypatch.setenv("VLRFACE_DIE_AT", "1:4")  # the workers' environment: worker 1, step 4
    with pytest.raises(DistributedTrainingError, match=r"worker 1 exited with status 3"):
        run_stage(manifest, root, ModelConfig(**KERAS_MODEL), stage, 0, desc="pretrain")
    latest = (tmp_path / "ckpt" / "latest").read_text()
    assert latest in {"ckpt-000000003", "ckpt-000000004"}  # the chief may have saved step 4
    monkeypatch.delenv("VLRFACE_DIE_AT")
    backbone, _, history = run_stage(manifest, root, ModelConfig(**KERAS_MODEL), stage, 0,
                                     desc="pretrain")  # fmt: skip
    assert len(history) == 2
    for a, b in zip(backbone.get_weights(), mw_w, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_keras_fine_tune_from_a_given_backbone_and_centres(data, keras_runs, tmp_path):
    """A fine-tune (``finetune_model``): the pre-trained backbone travels to the workers as a
    ``.keras`` file and the centres as an array; the 2 workers end where one process with the
    same 2 replicas ends, starting from the same weights (given to it as arrays)."""
    from vlrface.config.keras import ModelConfig, StageConfig
    from vlrface.models.keras import build_model
    from vlrface.training.keras import run_stage

    root, manifest = data
    _, (pre_w, pre_c, _), *_ = keras_runs
    stage = {**KERAS_STAGE, "epochs": 1, "resume": False, "checkpoint_every": None,
             "degrade": {"kind": "fixed", "probability": 0.5, "sizes": [7, 14]}}  # fmt: skip
    ref_w, ref_c, _ = train_keras_multi_worker(
        manifest, root, KERAS_MODEL, stage, 1, tmp_path / "ref", workers=2, one_process=True,
        backbone_weights=pre_w, centres=pre_c,
    )  # fmt: skip
    pretrained = build_model(ModelConfig(**KERAS_MODEL))
    pretrained.set_weights(pre_w)
    backbone, centres, history = run_stage(
        manifest, root, ModelConfig(**KERAS_MODEL),
        StageConfig(**stage, strategy="multi_worker", processes=2), 1, pretrained, pre_c,
        desc="finetune",
    )  # fmt: skip
    assert len(history) == 1
    assert not np.allclose(backbone.get_weights()[0], pre_w[0])  # it trained
    for a, b in zip(ref_w, backbone.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ref_c, centres, rtol=1e-5, atol=1e-5)


def test_torch_ddp_with_process_loaders_trains_as_with_threads(data, torch_runs, tmp_path):
    """``loader_kind: process`` under DDP: each rank computes its own rows of each batch ahead
    in its own spawned worker (shared memory), and the run ends where the threaded one does."""
    import os

    from vlrface.config.torch import TorchModelConfig
    from vlrface.data.loader import SLOT_PREFIX
    from vlrface.training import torch as tt

    root, manifest = data
    _, _, run, _, init, _ = torch_runs

    def orphans() -> set[str]:  # slots of processes that have exited (any other is in use)
        if not os.path.isdir("/dev/shm"):
            return set()
        names = [n for n in os.listdir("/dev/shm") if n.startswith(SLOT_PREFIX)]
        pid = lambda n: n[len(SLOT_PREFIX) :].split("_")[0]  # noqa: E731
        return {n for n in names if not os.path.exists(f"/proc/{pid(n)}")}

    before = orphans()
    stage = _torch_stage(tmp_path / "ckpt", loader_workers=1, loader_kind="process")
    procs = tt.run_stage("finetune", manifest, root, 32, TorchModelConfig(**TORCH_MODEL), stage,
                         0, init=init)  # fmt: skip
    assert procs.steps == run.steps and len(procs.history) == len(run.history)
    np.testing.assert_allclose(
        _flat(tt.load_model(procs.model)), _flat(tt.load_model(run.model)), atol=1e-6
    )
    assert not orphans() - before  # the ranks, gone, left no slot behind
