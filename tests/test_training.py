"""Training mechanics on a tiny real Keras/larq model and a few synthetic faces at 32x32.

Exact resume (and that the check would catch a wrong data position or optimizer state), the
NaN/Inf guard, teacher-student distillation checked by hand, decoupled weight decay, the plateau
schedule, the loader's policies, the margin losses, the weights' moving average and the
strategy/mixed-precision switches.
"""

from __future__ import annotations

import json
import logging
import shutil

import larq as lq
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from vlrface._keras import tf
from vlrface.config.keras import StageConfig, TeacherConfig
from vlrface.data.loader import FaceBatches
from vlrface.data.records import label_map
from vlrface.degrade import CrossResolutionPolicy, CurriculumPolicy, VLRPolicy
from vlrface.losses.keras import ArcFaceHead, arcface_loss
from vlrface.training.common import LRSchedule, NonFiniteLossError
from vlrface.training.keras import (
    LOSSES,
    CheckpointMismatchError,
    Optimizer,
    Stage,
    class_mean_centres,
    make_head,
    run_stage,
    seed_everything,
    train,
)

SIZE, EMB = 32, 8


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """16 synthetic faces of 4 identities in CASIA's layout, and their manifest."""
    from vlrface.data.synthetic import write_casia_layout

    root = tmp_path_factory.mktemp("faces")
    write_casia_layout(root, identities=4, images_per_identity=4, seed=5, progress=False)
    paths = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.jpg"))
    manifest = pd.DataFrame(
        {"path": paths, "identity": [p.split("/")[0] for p in paths], "split": "train"}
    )
    return root, manifest


def tiny_backbone(seed: int = 0, name: str = "tiny") -> tf.keras.Model:
    """A small real BNN: float stem, one binarised (larq, ste_sign) conv, BN, pooled embedding."""
    seed_everything(seed)
    layers = tf.keras.layers
    inp = layers.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(8, 3, strides=2, use_bias=False)(inp)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = lq.layers.QuantConv2D(
        8,
        3,
        padding="same",
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
        use_bias=False,
    )(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, layers.Dense(EMB)(x), name=name)


BASE = dict(
    epochs=2,
    batch_size=4,
    lr=0.05,
    schedule={"kind": "step", "milestones": [1]},
    # a curriculum over the stage's 8 steps: the data position matters to the degradation too
    degrade={"kind": "curriculum", "base": {"kind": "fixed", "sizes": [8, 16]}},
)


def stage(tmp, **kw) -> StageConfig:
    return StageConfig(**{**BASE, "checkpoint_dir": str(tmp), "checkpoint_every": 3, **kw})


def fit(faces, cfg, on_step=None, backbone_seed=0, **kw):
    root, manifest = faces
    backbone, centres, history = run_stage(
        manifest,
        str(root),
        None,
        cfg,
        seed=7,
        backbone=tiny_backbone(backbone_seed),
        desc="t",
        progress=False,
        on_step=on_step,
        **kw,
    )
    return [w.copy() for w in backbone.get_weights()] + [centres], history


def interrupt_at(k):
    def on_step(global_step, loss):
        if global_step == k:
            raise KeyboardInterrupt

    return on_step


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def uninterrupted(faces, tmp_path_factory):
    return fit(faces, stage(tmp_path_factory.mktemp("full")))


@pytest.fixture(scope="module")
def interrupted(faces, tmp_path_factory):
    """A run stopped after step 5 of 8; its last checkpoint is step 3 (mid-epoch 1)."""
    d = tmp_path_factory.mktemp("cut")
    with pytest.raises(KeyboardInterrupt):
        fit(faces, stage(d), on_step=interrupt_at(5))
    assert (d / "latest").read_text() == "ckpt-000000003"
    return d


def test_resume_is_bit_exact(faces, uninterrupted, interrupted, tmp_path):
    weights, history = uninterrupted
    d = tmp_path / "ckpt"
    shutil.copytree(interrupted, d)
    # a different initialisation: everything the result depends on must come from the checkpoint
    resumed, resumed_history = fit(faces, stage(d, resume=True), backbone_seed=99)
    assert same(resumed, weights)
    assert resumed_history == history
    final = json.loads((d / (d / "latest").read_text() / "state.json").read_text())
    assert (final["epoch"], final["step"], final["global_step"]) == (2, 0, 8)
    # resuming a finished stage trains nothing and returns the same model and history
    again, again_history = fit(faces, stage(d, resume=True), backbone_seed=98)
    assert same(again, weights) and again_history == history


def test_resume_check_catches_lost_data_position_or_optimizer_state(
    faces, uninterrupted, interrupted, tmp_path
):
    weights, _ = uninterrupted
    # data position lost: restart the epoch from batch 0 with the step-3 weights
    d = tmp_path / "position"
    shutil.copytree(interrupted, d)
    state_file = d / "ckpt-000000003" / "state.json"
    state = json.loads(state_file.read_text())
    state["step"], state["partial"] = 0, {"losses": [], "hits": 0, "seen": 0}
    state_file.write_text(json.dumps(state))
    assert not same(fit(faces, stage(d, resume=True))[0], weights)
    # optimizer state lost: zero momentum buffers and iteration counter
    d = tmp_path / "optimizer"
    shutil.copytree(interrupted, d)
    npz = d / "ckpt-000000003" / "variables.npz"
    with np.load(npz) as f:
        arrays = {k: np.zeros_like(v) if k.startswith("optimizer/") else v for k, v in f.items()}
    np.savez(npz, **arrays)
    assert not same(fit(faces, stage(d, resume=True))[0], weights)


def test_fresh_run_refuses_a_used_checkpoint_dir(faces, interrupted):
    from vlrface.errors import ConfigError

    with pytest.raises(ConfigError, match="resume: true"):
        fit(faces, stage(interrupted))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(faces, tmp_path):
    cfg = stage(tmp_path, lr=1e30, checkpoint_every=1, degrade=None)
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, step \d/4") as err:
        fit(faces, cfg)
    kept = tmp_path / (tmp_path / "latest").read_text()
    assert str(kept) in str(err.value)
    state = json.loads((kept / "state.json").read_text())
    assert f"global step {state['global_step'] + 1})" in str(err.value)
    with np.load(kept / "variables.npz") as f:
        assert all(np.isfinite(v).all() for v in f.values())


@pytest.mark.parametrize("distance,head_weight", [("mse", 1.0), ("cosine", 1.0), ("cosine", 0.0)])
def test_teacher_student_loss_by_hand_and_frozen_teacher(faces, tmp_path, distance, head_weight):
    root, manifest = faces
    manifest = manifest.iloc[::2].reset_index(drop=True)  # 8 faces, one batch of 8
    teacher = tiny_backbone(seed=1, name="teacher")
    teacher.save(tmp_path / "teacher.keras")
    teacher_before = [w.copy() for w in teacher.get_weights()]
    cfg = StageConfig(
        epochs=1,
        batch_size=8,
        lr=0.05,
        schedule={"kind": "constant"},
        degrade={"kind": "fixed", "probability": 1.0, "sizes": [8]},
        teacher=TeacherConfig(
            path=str(tmp_path / "teacher.keras"), lam=0.1, distance=distance,
            head_weight=head_weight,
        ),
    )  # fmt: skip
    labels = label_map(manifest)
    centres = np.random.default_rng(0).normal(size=(EMB, len(labels))).astype(np.float32)
    student = tiny_backbone(seed=2)
    start = [w.copy() for w in student.get_weights()]
    infos = []
    _, _, history = run_stage(
        manifest, str(root), None, cfg, 7, student, centres, progress=False, on_start=infos.append
    )
    assert infos[0]["teacher"]["lam"] == 0.1 and infos[0]["policy"]["kind"] == "fixed"
    assert infos[0]["teacher"]["distance"] == distance
    assert infos[0]["teacher"]["head_weight"] == head_weight

    # the same batch, by hand: w x CE of the ArcFace logits + 0.1 * mean((T(HR) - S(LR))^2)
    policy = VLRPolicy(1.0, (8,))
    x, y, x_hr = next(FaceBatches(root, manifest, labels, 8, 7, SIZE, True, policy, True).epoch(0))
    assert not np.array_equal(x, x_hr)
    check = tiny_backbone(seed=2)
    check.set_weights(start)
    head = ArcFaceHead(len(labels), 16.0, 0.5)
    head.build((None, EMB))
    head.centres.assign(centres)
    s = check(x, training=True)
    loaded = tf.keras.models.load_model(tmp_path / "teacher.keras")
    t = loaded(x_hr, training=False)
    ce = float(arcface_loss(head(s, y), y))
    if distance == "mse":
        distill = 0.1 * float(np.mean(np.square(t.numpy() - s.numpy())))
    else:  # 0.1 * mean over the samples of |s/|s| - t/|t||^2
        unit = [a / np.linalg.norm(a, axis=1, keepdims=True) for a in (t.numpy(), s.numpy())]
        distill = 0.1 * float(np.mean(np.sum(np.square(unit[0] - unit[1]), axis=1)))
    assert distill > 1e-3
    assert ce > 1e-2
    assert history[0]["loss"] == pytest.approx(head_weight * ce + distill, rel=1e-5, abs=1e-6)
    # the teacher is frozen: the saved model did not change either
    assert same([w.copy() for w in loaded.get_weights()], teacher_before)


def test_resume_refuses_another_distillation(faces, tmp_path):
    """A checkpoint trained with one distillation distance is not resumed under another."""
    root, manifest = faces
    manifest = manifest.iloc[::2].reset_index(drop=True)
    tiny_backbone(seed=1, name="teacher").save(tmp_path / "teacher.keras")
    labels = label_map(manifest)
    centres = np.random.default_rng(0).normal(size=(EMB, len(labels))).astype(np.float32)

    def stage(distance, epochs):
        teacher = TeacherConfig(path=str(tmp_path / "teacher.keras"), distance=distance)
        cfg = StageConfig(
            epochs=epochs, batch_size=8, lr=0.05, schedule={"kind": "constant"}, teacher=teacher,
            checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=1, resume=True,
        )  # fmt: skip
        return run_stage(
            manifest, str(root), None, cfg, 7, tiny_backbone(seed=2), centres, progress=False
        )

    stage("mse", 1)
    with pytest.raises(Exception, match="'distill'"):
        stage("cosine", 2)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_weight_decay_is_decoupled(name):
    """A zero gradient still shrinks w by lr * wd per step, and the decay never enters the
    momentum (SGD) or the moments (Adam): with L2 (coupled) decay the second step would shrink
    by (1 + momentum) x that, and Adam would move w by about lr per step."""
    w = tf.Variable([1.0, -2.0])
    opt = Optimizer(0.9, 0.5, name).build(0.1)  # the trainer's
    assert type(opt).__name__ == {"sgd": "SGD", "adam": "Adam"}[name]
    opt.build([w])
    for _ in range(2):
        before = w.numpy().copy()
        opt.apply_gradients([(tf.zeros_like(w), w)])
        np.testing.assert_allclose(w.numpy(), before * (1 - 0.1 * 0.5), rtol=1e-6)


def test_the_optimizer_follows_the_schedule(faces, tmp_path):
    """The rate a schedule sets is the rate the optimizer uses: with momentum 0 and the rate cut
    to 1e-12 x after epoch 1, epoch 2 leaves the weights where one epoch put them (tf-keras'
    SGD copies a ``tf.Variable`` learning rate, so assigning that one changed nothing)."""
    # BatchNorm frozen (its moving statistics move at any rate); a fixed degradation (the
    # curriculum's depends on the stage's length)
    kw = dict(momentum=0.0, freeze_bn=True, degrade={"kind": "fixed", "sizes": [8, 16]})
    kw["schedule"] = {"kind": "step", "milestones": [1], "gamma": 1e-12}
    one, _ = fit(faces, stage(tmp_path / "one", epochs=1, **kw))
    two, history = fit(faces, stage(tmp_path / "two", epochs=2, **kw))
    assert history[1]["lr"] == pytest.approx(0.05e-12)
    assert all(np.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(one, two, strict=True))
    full, _ = fit(
        faces, stage(tmp_path / "full", epochs=2, **{**kw, "schedule": {"kind": "constant"}})
    )
    assert not all(np.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(one, full, strict=True))


def test_adam_trains_resumes_bit_exact_and_is_not_resumed_as_sgd(faces, uninterrupted, tmp_path):
    """``optimizer: adam``: a run stopped mid-epoch resumes bit for bit (Adam's moments and
    counter are checkpointed), it is not the SGD run, and its checkpoint is refused by an SGD
    stage (and an SGD checkpoint by an Adam stage)."""
    adam = dict(optimizer="adam", lr=0.01)
    full, history = fit(faces, stage(tmp_path / "full", **adam))
    assert not same(full, uninterrupted[0])
    assert history[-1]["loss"] < history[0]["loss"]
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        fit(faces, stage(cut, **adam), on_step=interrupt_at(5))
    resumed, resumed_history = fit(faces, stage(cut, resume=True, **adam), backbone_seed=99)
    assert same(resumed, full) and resumed_history == history
    with pytest.raises(CheckpointMismatchError, match="'optimizer' is 'adam', this run's 'sgd'"):
        fit(faces, stage(cut, resume=True))
    sgd = tmp_path / "sgd"
    with pytest.raises(KeyboardInterrupt):
        fit(faces, stage(sgd), on_step=interrupt_at(5))
    with pytest.raises(CheckpointMismatchError, match="'optimizer' is 'sgd', this run's 'adam'"):
        fit(faces, stage(sgd, resume=True, **adam))


def test_warmup_resumes_bit_exact_inside_the_ramp(faces, uninterrupted, tmp_path):
    """A Keras stage with ``schedule.warmup_steps`` (6 of its 8 steps) stopped after step 5
    (checkpoint of step 3, inside the ramp) resumes to the uninterrupted run's weights, which
    differ from the same stage without the warm-up."""
    warm = {**BASE["schedule"], "warmup_steps": 6}
    full, _ = fit(faces, stage(tmp_path / "full", schedule=warm))
    assert not same(full, uninterrupted[0])
    d = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        fit(faces, stage(d, schedule=warm), on_step=interrupt_at(5))
    assert (d / "latest").read_text() == "ckpt-000000003"
    resumed, _ = fit(faces, stage(d, schedule=warm, resume=True), backbone_seed=99)
    assert same(resumed, full)


def test_plateau_schedule():
    p = LRSchedule("plateau", lr=0.01, factor=0.1, patience=1, threshold=0.0)
    s = p.initial_state()
    lrs = []
    for loss in [5.0, 4.0, 4.0, 4.5, 3.0, 3.0, 3.0]:
        lrs.append(p.lr_for(0, s))
        s = p.update(s, loss)
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001])
    assert p.lr_for(0, s) == pytest.approx(1e-4)  # a second epoch without improvement


def test_loader_policies(faces):
    root, manifest = faces
    labels = label_map(manifest)
    crossres = CrossResolutionPolicy(0.5, VLRPolicy(1.0, (4,)))
    hr_only = FaceBatches(root, manifest, labels, 8, 3, SIZE, False, None)
    mixed = FaceBatches(root, manifest, labels, 8, 3, SIZE, False, crossres, with_hr=True)
    for (x0, _), (x, _, x_hr) in zip(hr_only.epoch(0), mixed.epoch(0), strict=True):
        np.testing.assert_array_equal(x0, x_hr)
        changed = [not np.array_equal(a, b) for a, b in zip(x, x_hr, strict=True)]
        assert sum(changed) == 4  # exactly half of every batch degraded
    curr = CurriculumPolicy(total_steps=4, base=VLRPolicy(1.0, (4,)))
    batches = FaceBatches(root, manifest, labels, 4, 3, SIZE, True, curr, with_hr=True)
    assert [batches.policy_at(e, s).probability for e, s in ((0, 0), (0, 2), (1, 0))] == [
        0.0,
        0.5,
        1.0,
    ]
    first = next(batches.epoch(0))
    np.testing.assert_array_equal(first[0], first[2])  # p = 0 at step 0
    last = next(batches.epoch(1))
    assert all(not np.array_equal(a, b) for a, b in zip(last[0], last[2], strict=True))
    # start= continues the same sequence
    full = list(batches.epoch(1))
    tail = list(batches.epoch(1, start=2))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(full[2:], tail, strict=True))


@pytest.mark.parametrize("loss", LOSSES)
def test_each_margin_loss_trains_a_step(faces, loss):
    root, manifest = faces
    labels = label_map(manifest)
    stage_ = Stage(epochs=1, batch_size=8, loss=loss)
    backbone = tiny_backbone(3)
    head = make_head(len(labels), EMB, stage_)
    batches = FaceBatches(root, manifest.iloc[:8], labels, 8, 1, SIZE, False, None)
    before = backbone.get_weights()
    history = train(backbone, head, batches, stage_, progress=False)
    assert np.isfinite(history[0]["loss"])
    assert not same(backbone.get_weights(), before)
    assert type(head).__name__.lower().startswith(loss[:4])


def test_train_acc_is_measured_without_the_margin(faces):
    """With a CosFace margin of 2 the true class's margin logit ``s (cos - 2)`` is below every
    other class's ``s cos``: accuracy on the margin logits is 0 whatever the model. The recorded
    ``train_acc`` is that of the plain cosines: the head starts at the class means of the
    backbone's embeddings, so most faces are already nearest their own class."""
    root, manifest = faces
    labels = label_map(manifest)
    backbone = tiny_backbone(3)
    batches = FaceBatches(root, manifest, labels, 8, 1, SIZE, False, None)
    # the embeddings the training step sees: the same batches, BN on the batch's statistics
    pairs = [(backbone(x, training=True).numpy(), y) for x, y in batches.epoch(0)]
    emb, y = np.concatenate([e for e, _ in pairs]), np.concatenate([y for _, y in pairs])
    stage_ = Stage(epochs=1, batch_size=8, loss="cosface", head_params={"margin": 2.0},
                   schedule=LRSchedule("constant", 1e-6))  # fmt: skip
    head = make_head(len(labels), EMB, stage_, class_mean_centres(emb[:, None], y, len(labels)))
    history = train(backbone, head, batches, stage_, progress=False)
    assert history[0]["train_acc"] >= 0.5


@pytest.mark.parametrize("strategy", ["mirrored", "multi_worker"])
def test_strategy_and_mixed_precision_on_one_cpu(faces, uninterrupted, caplog, strategy):
    """On one CPU a strategy runs the strategy.run path with one replica: the same weights;
    ``mixed_precision`` is ignored (and says so)."""
    cfg = StageConfig(**BASE, strategy=strategy, mixed_precision=True)
    infos = []
    with caplog.at_level(logging.WARNING, logger="vlrface.training.keras"):
        weights, history = fit(faces, cfg, on_start=infos.append)
    assert infos[0]["replicas"] == 1 and infos[0]["mixed_precision"] is False
    assert "mixed_precision" in caplog.text
    assert same(weights, uninterrupted[0]) and history == uninterrupted[1]


def test_teacher_from_a_model_config_and_checkpoint(tmp_path):
    from vlrface.config.keras import ModelConfig
    from vlrface.models.keras import build_model
    from vlrface.training.keras import load_teacher

    model_cfg = ModelConfig(name="binaryfacenet", channels=8, embedding=16)
    seed_everything(4)
    trained = build_model(model_cfg)
    trained.save(tmp_path / "teacher.keras")
    teacher = load_teacher(
        TeacherConfig(model=model_cfg, checkpoint=str(tmp_path / "teacher.keras"))
    )
    assert not teacher.trainable and not teacher.trainable_variables
    assert same(teacher.get_weights(), trained.get_weights())


def test_freeze_bn_keeps_batch_norm_and_trains_the_rest(faces, tmp_path):
    """``freeze_bn``: every BatchNormalization keeps its moving statistics, scale and offset
    (inference mode under training); the other weights train; without it the statistics move."""

    def bn_weights(model):
        return [
            w.numpy().copy()
            for layer in model.submodules
            if isinstance(layer, tf.keras.layers.BatchNormalization)
            for w in layer.weights
        ]

    def train_once(freeze):
        root, manifest = faces
        backbone = tiny_backbone(4)
        before_bn = bn_weights(backbone)
        before_conv = backbone.layers[1].get_weights()[0].copy()
        cfg = StageConfig(epochs=1, batch_size=4, lr=0.05, freeze_bn=freeze)
        infos = []
        trained, _, _ = run_stage(
            manifest, str(root), None, cfg, seed=7, backbone=backbone, desc="t",
            progress=False, on_start=infos.append,
        )  # fmt: skip
        assert infos[0]["freeze_bn"] is freeze
        moved = not same(bn_weights(trained), before_bn)
        conv_moved = not np.array_equal(trained.layers[1].get_weights()[0], before_conv)
        return moved, conv_moved

    assert train_once(True) == (False, True)
    assert train_once(False) == (True, True)


def test_freeze_keeps_one_kind_of_layer_and_trains_the_other(faces):
    """``freeze: quantized`` keeps every larq layer's weights and trains the float ones;
    ``freeze: float`` the reverse; the returned model keeps them frozen (so does its info)."""

    def kinds(model):
        quant, flt = [], []
        for layer in model.layers:
            if not layer.weights or isinstance(layer, tf.keras.layers.BatchNormalization):
                continue
            (quant if isinstance(layer, lq.layers.QuantConv2D) else flt).extend(
                w.numpy().copy() for w in layer.weights
            )
        return quant, flt

    root, manifest = faces
    moved = {}
    for which in ("quantized", "float", None):
        backbone = tiny_backbone(4)
        before = kinds(backbone)
        infos = []
        cfg = StageConfig(epochs=1, batch_size=4, lr=0.05, freeze=which)
        trained, _, _ = run_stage(
            manifest, str(root), None, cfg, seed=7, backbone=backbone, desc="t",
            progress=False, on_start=infos.append,
        )  # fmt: skip
        assert infos[0]["freeze"] == which
        quantized = [ly for ly in trained.layers if isinstance(ly, lq.layers.QuantConv2D)]
        assert all(ly.trainable == (which != "quantized") for ly in quantized)
        after = kinds(trained)
        moved[which] = tuple(not same(a, b) for a, b in zip(after, before, strict=True))
    assert moved == {"quantized": (False, True), "float": (True, False), None: (True, True)}
    with pytest.raises(ValidationError):
        StageConfig(epochs=1, batch_size=4, lr=0.05, freeze="binary")


def finetune_tiny(faces, **kw) -> tf.keras.Model:
    """One epoch of ``tiny_backbone(4)`` fine-tuned on ``faces`` with the stage keys ``kw``."""
    root, manifest = faces
    cfg = StageConfig(epochs=1, batch_size=4, lr=0.05, **kw)
    trained, _, _ = run_stage(
        manifest, str(root), None, cfg, seed=7, backbone=tiny_backbone(4), desc="t",
        progress=False,
    )  # fmt: skip
    return trained


def test_weight_ensemble_blends_trained_and_starting_weights(faces, tmp_path):
    """``weight_ensemble: a``: the stage ends at a x trained + (1 - a) x starting weights (the
    same training as without it); it needs a starting backbone."""
    from vlrface.errors import ConfigError

    root, manifest = faces
    start = [w.copy() for w in tiny_backbone(4).get_weights()]
    plain = finetune_tiny(faces).get_weights()
    blended = finetune_tiny(faces, weight_ensemble=0.25).get_weights()
    assert not same(plain, start)
    for p, b, s in zip(plain, blended, start, strict=True):
        np.testing.assert_allclose(b, 0.25 * p + 0.75 * s, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="weight_ensemble needs a starting backbone"):
        run_stage(
            manifest, str(root), None, StageConfig(epochs=1, batch_size=4, weight_ensemble=0.5),
            seed=7, desc="t", progress=False,
        )  # fmt: skip


def test_output_ensemble_averages_the_two_embeddings_and_round_trips(faces, tmp_path):
    """``output_ensemble: a``: the stage's model is the trained backbone and a copy at its
    starting weights side by side, embedding unit(a x unit(trained) + (1 - a) x unit(start)),
    with the same training as without it; it saves and loads (safe mode) and converts with LCE
    to the same embeddings; it needs a starting backbone and excludes ``weight_ensemble``."""
    from vlrface._keras import load_keras, save_keras
    from vlrface.errors import ConfigError
    from vlrface.export import lce
    from vlrface.models.keras.checkpoint import CheckpointError, copy_weights

    root, manifest = faces
    plain, ensemble = finetune_tiny(faces), finetune_tiny(faces, output_ensemble=0.25)
    start = tiny_backbone(4)
    x = np.random.default_rng(0).uniform(-1, 1, (6, SIZE, SIZE, 3)).astype(np.float32)

    def unit(e):
        e = np.asarray(e, np.float64)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    want = unit(0.25 * unit(plain(x, training=False)) + 0.75 * unit(start(x, training=False)))
    got = ensemble(x, training=False).numpy()
    assert not np.allclose(
        unit(plain(x, training=False)), unit(start(x, training=False)), atol=1e-3
    )
    np.testing.assert_allclose(got, want, atol=1e-5)
    save_keras(ensemble, str(tmp_path / "e.keras"))
    loaded = load_keras(str(tmp_path / "e.keras"))
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), got)
    parity = lce.parity(loaded, lce.convert(loaded), x)
    assert parity["cosine_min"] > 0.99, parity
    with pytest.raises(CheckpointError, match="an ensemble of 2 networks"):
        copy_weights(loaded, tiny_backbone(4), "e.keras")  # not a starting checkpoint
    with pytest.raises(ConfigError, match="output_ensemble needs a starting backbone"):
        run_stage(
            manifest, str(root), None, StageConfig(epochs=1, batch_size=4, output_ensemble=0.5),
            seed=7, desc="t", progress=False,
        )  # fmt: skip
    with pytest.raises(ValidationError, match="not both"):
        StageConfig(epochs=1, batch_size=4, weight_ensemble=0.5, output_ensemble=0.5)


def test_ema_ends_at_the_moving_average_and_resumes_bit_exact(faces, uninterrupted, tmp_path):
    """``ema: d``: the stage's backbone ends at the moving average of its weights after each
    step, with the decay warmed up as ``min(d, (1 + t) / (10 + t))`` (checked by hand); the last
    checkpoint keeps the trained weights, and a run stopped mid-stage resumes to the same
    average."""
    root, manifest = faces
    backbone = tiny_backbone(0)
    floating = [i for i, w in enumerate(backbone.weights) if w.dtype.is_floating]
    average = [w.copy() for w in backbone.get_weights()]

    def on_step(t, loss):
        d = min(0.5, (1 + t) / (10 + t))
        now = backbone.get_weights()
        for i in floating:
            average[i] = d * average[i] + (1 - d) * now[i]

    d = tmp_path / "full"
    averaged, _, _ = run_stage(
        manifest, str(root), None, stage(d, ema=0.5), seed=7, backbone=backbone, desc="t",
        progress=False, on_step=on_step,
    )  # fmt: skip
    trained = uninterrupted[0][:-1]  # the same training without the average
    assert not same(average, trained)
    for got, want in zip(averaged.get_weights(), average, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with np.load(d / "ckpt-000000008" / "variables.npz") as z:
        assert same([z[f"backbone/{i}"] for i in range(len(trained))], trained)
    full = [w.copy() for w in averaged.get_weights()]
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        fit(faces, stage(cut, ema=0.5), on_step=interrupt_at(5))
    assert same(fit(faces, stage(cut, ema=0.5, resume=True), backbone_seed=99)[0][:-1], full)
    # a checkpoint without the average is not resumed with one
    with pytest.raises(KeyboardInterrupt):
        fit(faces, stage(tmp_path / "plain_cut"), on_step=interrupt_at(5))
    with pytest.raises(CheckpointMismatchError):
        fit(faces, stage(tmp_path / "plain_cut", ema=0.5, resume=True))


@pytest.mark.parametrize("strategy", ["mirrored", "multi_worker"])
def test_ema_under_a_strategy_averages_as_without(faces, strategy):
    """The moving average of a strategy's (mirrored) variables, one replica: the same weights."""
    plain, _ = fit(faces, StageConfig(**BASE, ema=0.5))
    assert same(fit(faces, StageConfig(**BASE, strategy=strategy, ema=0.5))[0], plain)
