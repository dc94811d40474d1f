"""``vlrface.training.torch``: exact resume, the NaN guard, the frozen teacher and the
distillation loss, decoupled weight decay. Tiny models and 16 px inputs: each test is seconds."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from vlrface.config.torch import TorchStageConfig
from vlrface.models.torch import Preprocessing
from vlrface.training.common import NonFiniteLossError
from vlrface.training.torch import (
    CHECKPOINT,
    decay_parameters,
    decoupled_step,
    seed_everything,
    train,
)

SPEC = Preprocessing(input_size=16, channel_order="RGB", mean=(127.5,) * 3, std=(128.0,) * 3)


class Tiny(nn.Module):
    """Conv + BN + dropout + linear: BN statistics, dropout draws and momentum all matter."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, dim),
        )
        self.preprocessing = SPEC
        self.name = "tiny"

    def forward(self, x):
        return self.net(x)


def tiny(seed: int = 0) -> Tiny:
    seed_everything(seed)
    return Tiny()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from vlrface.data.manifest import build_manifest
    from vlrface.data.synthetic import write_casia_layout

    root = write_casia_layout(tmp_path_factory.mktemp("faces"), 6, 4, seed=0, progress=False)
    return root, build_manifest("casia_webface", root, progress=False)


STAGE = dict(
    epochs=3,
    batch_size=6,
    lr=0.05,
    weight_decay=5e-4,
    head={"kind": "arcface", "scale": 8.0},
    schedule={"kind": "step", "milestones": [2], "gamma": 0.5},
    degrade={"kind": "curriculum", "base": {"kind": "fixed", "sizes": [4, 8], "up": "area"}},
    checkpoint_every=2,
    progress=False,
)


def params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_bits(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Kill(Exception):
    pass


def killer(at: int):
    def on_step(step, record):
        if step == at:
            raise Kill

    return on_step


def test_resume_after_interruption_is_bit_exact(data, tmp_path):
    root, manifest = data
    stage = TorchStageConfig(**STAGE)  # 4 steps/epoch, 12 steps
    full = train(tiny(), manifest, root, stage, seed=1, image_size=32)
    assert full.steps == 12 and len(full.history) == 3
    want = params(full.model)

    # killed at step 7: the checkpoint of step 6 (mid-epoch 2) survives, step 7 is redone
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Kill):
        train(
            tiny(), manifest, root, stage, 1, image_size=32, checkpoint_dir=ckpt, on_step=killer(7)
        )
    saved = torch.load(ckpt / CHECKPOINT, weights_only=False)
    assert (saved["step"], saved["epoch"], saved["batch"]) == (6, 1, 2)
    # a fresh process would build a fresh model with other weights: resume must not care
    resumed = train(tiny(seed=99), manifest, root, stage, 1, image_size=32, checkpoint_dir=ckpt)
    assert resumed.resumed_from == 6 and resumed.steps == 12
    assert same_bits(params(resumed.model), want)
    assert resumed.history == full.history

    # the test has teeth: the same resume without the momentum buffers, or restarting the
    # epoch's data from its first batch, ends somewhere else
    for tamper in ("optimizer", "position"):
        broken = dict(saved)
        if tamper == "optimizer":
            broken["optimizer"] = {"state": {}, "param_groups": saved["optimizer"]["param_groups"]}
        else:
            broken["batch"] = 0
        other = tmp_path / tamper
        other.mkdir()
        torch.save(broken, other / CHECKPOINT)
        off = train(tiny(), manifest, root, stage, 1, image_size=32, checkpoint_dir=other)
        assert not same_bits(params(off.model), want), tamper


def test_resume_refuses_a_checkpoint_of_another_configuration(data, tmp_path):
    from vlrface.errors import ConfigError

    root, manifest = data
    stage = TorchStageConfig(**{**STAGE, "epochs": 1})
    train(tiny(), manifest, root, stage, 1, image_size=32, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="checkpoint of another configuration"):
        train(tiny(), manifest, root, stage, 2, image_size=32, checkpoint_dir=tmp_path)


class NaNAfter(Tiny):
    """Its descriptor turns NaN from the ``bad``-th training forward pass on."""

    def __init__(self, bad: int):
        super().__init__()
        self.calls, self.bad = 0, bad

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.bad:
                return out * float("nan")
        return out


def test_nan_guard_names_the_step_and_keeps_the_last_good_checkpoint(data, tmp_path):
    root, manifest = data
    stage = TorchStageConfig(**STAGE)
    seed_everything(0)
    model = NaNAfter(bad=6)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 6 \(epoch 2\).*last good"):
        train(model, manifest, root, stage, 1, image_size=32, checkpoint_dir=tmp_path)
    kept = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert kept["step"] == 4
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("head_weight", [1.0, 0.25])
def test_teacher_is_frozen_and_distillation_loss_is_lambda_mse(data, head_weight):
    root, manifest = data
    stage = TorchStageConfig(
        **{
            **STAGE,
            "epochs": 1,
            "max_steps": 1,
            "degrade": {"kind": "fixed", "probability": 1.0, "sizes": [4]},
            "teacher": {"lam": 0.1, "head_weight": head_weight},
        }
    )
    teacher = tiny(seed=5)
    before = params(teacher)
    records = []
    student = tiny(seed=6)
    train(
        student,
        manifest,
        root,
        stage,
        1,
        image_size=32,
        teacher=teacher,
        on_step=lambda s, r: records.append(r),
    )
    assert same_bits(params(teacher), before)  # BN statistics too: eval mode
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())

    # recompute step 1's distillation term by hand from the same batch and initial student
    from vlrface.data import records as rec
    from vlrface.degrade import degrade
    from vlrface.preprocess import load_face
    from vlrface.training.torch import epoch_order

    order = epoch_order(len(manifest), 1, 0)[:6]
    hr, lr = [], []
    for i in order:
        img = load_face(root, manifest.path[i], 32)
        small = degrade(img, 4, "area", "area")
        if np.random.default_rng([1, 0, int(i), 0xF1]).uniform() < 0.5:
            img, small = img[:, ::-1], small[:, ::-1]
        hr.append(img)
        lr.append(small)

    def batch(faces):
        x = np.stack([_resize(np.ascontiguousarray(f)) for f in faces])
        x = (x.astype(np.float32) - 127.5) / 128.0
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    start = tiny(seed=6)
    start.train()
    seed_everything(1)  # train() seeds before its first step: the same dropout draws
    from vlrface.training.torch import descriptor_dim, make_head

    descriptor_dim(start)
    make_head(stage.head, 8, len(rec.label_map(manifest)))
    s = start(batch(lr))
    with torch.no_grad():
        t = teacher(batch(hr))
    diff = (s - t).detach().double()
    by_hand = 0.1 * float((diff**2).sum()) / diff.numel()
    assert records[0]["distill_loss"] == pytest.approx(by_hand, rel=1e-5)
    want = head_weight * records[0]["cls_loss"] + by_hand
    assert records[0]["loss"] == pytest.approx(want, rel=1e-5)


def _resize(face: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(face, (16, 16), interpolation=cv2.INTER_LINEAR)


def test_decoupled_weight_decay_on_one_parameter():
    lr, wd, mu, g = 0.1, 0.5, 0.9, 2.0
    p = nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr, momentum=mu)
    for _ in range(2):
        opt.zero_grad()
        (g * p).sum().backward()  # constant gradient g
        decoupled_step(opt, lr, wd)
    # by hand: p1 = p0 (1 - lr wd) - lr g; buf2 = mu g + g; p2 = p1 (1 - lr wd) - lr buf2
    p1 = 3.0 * (1 - lr * wd) - lr * g
    p2 = p1 * (1 - lr * wd) - lr * (mu * g + g)
    assert p.item() == pytest.approx(p2, abs=1e-12)
    # coupled L2 (torch's weight_decay) puts wd * p through the momentum buffer: different
    q = nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    coupled = torch.optim.SGD([q], lr=lr, momentum=mu, weight_decay=wd)
    for _ in range(2):
        coupled.zero_grad()
        (g * q).sum().backward()
        coupled.step()
    assert not math.isclose(q.item(), p2, abs_tol=1e-6)
    # no gradient at all: pure exponential shrinkage
    z = torch.ones(3)
    decay_parameters([z], lr, wd)
    assert torch.equal(z, torch.full((3,), 1 - lr * wd))
    with pytest.raises(ValueError, match="weight_decay=0"):
        decoupled_step(torch.optim.SGD([p], lr=lr, weight_decay=1e-4), lr, wd)


def test_adam_with_the_decoupled_decay_is_torch_adamw():
    """``optimizer: adam``: ``make_optimizer`` + ``decoupled_step`` take the steps of
    ``torch.optim.AdamW`` (``momentum`` as beta_1), and not those of SGD."""
    from vlrface.training.torch import make_optimizer

    def run(make, step, optimizer="adam"):
        torch.manual_seed(0)
        p = nn.Parameter(torch.randn(5, dtype=torch.float64))
        opt = make([p], TorchStageConfig(lr=0.01, momentum=0.8, optimizer=optimizer))
        for i in range(4):
            opt.zero_grad()
            ((i + 1) * p**2).sum().backward()
            step(opt)
        return p.detach().clone()

    ours = run(make_optimizer, lambda opt: decoupled_step(opt, 0.01, 0.5))

    def adamw(ps, st):
        return torch.optim.AdamW(ps, lr=st.lr, betas=(st.momentum, 0.999), weight_decay=0.5)

    adamw = run(adamw, lambda opt: opt.step())
    assert torch.allclose(ours, adamw, rtol=0, atol=1e-12)
    sgd = run(make_optimizer, lambda opt: decoupled_step(opt, 0.01, 0.5), optimizer="sgd")
    assert not torch.allclose(ours, sgd, rtol=0, atol=1e-6)


def test_step_and_plateau_schedules():
    from vlrface.config.common import ScheduleConfig
    from vlrface.training.common import LRSchedule

    def run(cfg, lr, losses):
        sched = LRSchedule.from_config(cfg, lr)
        state, lrs = sched.initial_state(), []
        for epoch, loss in enumerate(losses):
            state = sched.update(state, loss)
            lrs.append(sched.lr_for(epoch + 1, state))  # the next epoch's
        return lrs, state

    step = ScheduleConfig(kind="step", milestones=[1, 3], gamma=0.1)
    assert run(step, 1.0, [0.0] * 4)[0] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    # SqueezeFacePoseNet: 0.01 -> 0.005 -> 0.001 -> 0.0001 on plateaus (patience 0), then stays
    levels = ScheduleConfig(kind="plateau", levels=[0.005, 0.001, 0.0001], patience=0)
    lrs, _ = run(levels, 0.01, (5.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0))
    assert lrs == [0.01, 0.01, 0.005, 0.005, 0.001, 0.0001, 0.0001]
    # Massoli: divide by 5 on a plateau; the state is plain JSON (it travels in checkpoints)
    factor = ScheduleConfig(kind="plateau", factor=0.2, patience=1)
    lrs, state = run(factor, 1e-3, (2.0, 2.0, 2.0))
    assert lrs[-1] == pytest.approx(2e-4)
    assert json.loads(json.dumps(state)) == state
    assert run(ScheduleConfig(kind="constant"), 0.5, [1.0, 2.0])[0] == [0.5, 0.5]


def test_warmup_ramps_the_first_steps_and_resumes_exactly(data, tmp_path):
    """``schedule.warmup_steps``: the first steps' rates rise linearly to the schedule's
    (``LRSchedule.lr_at``), then follow it; a run killed inside the warm-up resumes bit-exact."""
    from vlrface.config.common import ScheduleConfig
    from vlrface.training.common import LRSchedule

    sched = LRSchedule.from_config(ScheduleConfig(milestones=[1], warmup_steps=4), 0.4)
    state = sched.initial_state()
    ramp = [sched.lr_at(0, k, state) for k in range(6)]
    assert ramp == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    assert sched.lr_at(1, 2, state) == pytest.approx(0.04 * 3 / 4)  # warm-up of a decayed epoch
    assert sched.lr_at(1, 9, state) == pytest.approx(0.04)
    assert sched.describe()["warmup_steps"] == 4
    assert "warmup_steps" not in LRSchedule.from_config(ScheduleConfig(), 0.4).describe()

    root, manifest = data
    stage = TorchStageConfig(**{**STAGE, "schedule": {**STAGE["schedule"], "warmup_steps": 5}})
    lrs = {}
    full = train(tiny(), manifest, root, stage, seed=1, image_size=32,
                 on_step=lambda k, r: lrs.setdefault(k, r["lr"]))  # fmt: skip
    assert [lrs[k] for k in range(1, 8)] == pytest.approx(
        [0.01, 0.02, 0.03, 0.04, 0.05, 0.05, 0.05]
    )
    plain = train(tiny(), manifest, root, TorchStageConfig(**STAGE), seed=1, image_size=32)
    assert not same_bits(params(plain.model), params(full.model))
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Kill):
        train(tiny(), manifest, root, stage, 1, image_size=32, checkpoint_dir=ckpt,
              on_step=killer(3))  # fmt: skip
    resumed = train(tiny(seed=99), manifest, root, stage, 1, image_size=32, checkpoint_dir=ckpt)
    assert resumed.resumed_from == 2
    assert same_bits(params(resumed.model), params(full.model))


def test_bad_stage_config_names_the_key():
    from vlrface.config.torch import parse_torch
    from vlrface.errors import ConfigError

    base = {"pretrain": {"epochs": 1}, "registry": {"compare_metric": "eval.demo.hr_lr.14.acc"}}
    with pytest.raises(
        ConfigError, match=r"'finetune\.degrade'.*unknown key\(s\) \['probabilty'\]"
    ):
        parse_torch({**base, "finetune": {"degrade": {"kind": "fixed", "probabilty": 1}}}, "x")
    margn = r"'finetune\.head'.*\['margn'\] do not apply to loss 'arcface'"
    with pytest.raises(ConfigError, match=margn):
        parse_torch({**base, "finetune": {"head": {"kind": "arcface", "margn": 0.5}}}, "x")
    with pytest.raises(ConfigError, match=r"'finetune\.schedule\.levels'.*strictly decreasing"):
        parse_torch({**base, "finetune": {"schedule": {"kind": "plateau", "levels": [1, 2]}}}, "x")
    with pytest.raises(ConfigError, match=r"'finetune'.*loader_kind: process needs loader_work"):
        parse_torch({**base, "finetune": {"loader_kind": "process"}}, "x")
    with pytest.raises(ConfigError, match=r"'finetune\.loader_kind'"):
        parse_torch({**base, "finetune": {"loader_kind": "fork", "loader_workers": 2}}, "x")
    ok = parse_torch({**base, "finetune": {"loader_kind": "process", "loader_workers": 2}}, "x")
    assert (ok.finetune.loader_kind, ok.finetune.loader_workers) == ("process", 2)


def test_checkpoint_bytes_rebuild_the_model_and_ddp_is_a_no_op_in_one_process(tmp_path):
    from vlrface.config.torch import TorchModelConfig
    from vlrface.errors import ConfigError
    from vlrface.training.torch import _rank_world, load_model, make_model, save_model

    cfg = TorchModelConfig(name="squeezefaceposenet_gdc", embedding=16, input_size=32)
    seed_everything(0)
    model = make_model(cfg).eval()
    path = tmp_path / "teacher.pt"
    path.write_bytes(save_model(model, cfg))
    again = load_model(path).eval()
    assert again.preprocessing == model.preprocessing and again.preprocessing.input_size == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    with pytest.raises(ConfigError, match="not a vlrface torch checkpoint"):
        bad = tmp_path / "bad.pt"
        torch.save({"weights": 1}, bad)
        load_model(bad)
    with pytest.raises(ConfigError, match="missing.pt: torch checkpoint not found"):
        load_model(tmp_path / "missing.pt")
    assert _rank_world(True) == (0, 1)  # no process group: DDP changes nothing


@pytest.mark.parametrize("kind", ["softmax", "arcface", "cosface", "sphereface", "adaface",
                                  "laplacian"])  # fmt: skip
def test_each_loss_head_trains(data, kind):
    """Every row of the loss table trains on the torch track (Laplacian with the batch's image
    quality)."""
    from vlrface.losses.heads import LOSSES

    assert kind in LOSSES
    root, manifest = data
    stage = TorchStageConfig(epochs=1, batch_size=6, head={"kind": kind}, progress=False)
    before = params(tiny())
    result = train(tiny(), manifest, root, stage, seed=1, image_size=32)
    assert math.isfinite(result.history[0]["loss"])
    assert not same_bits(params(result.model), before)
    assert type(result.head).__name__.lower().startswith(kind[:4])


def test_train_acc_is_measured_without_the_margin(data):
    """A CosFace margin of 2 puts every true class's margin logit below the others: accuracy on
    the margin logits is exactly 0. The recorded accuracy is the plain cosines'."""
    root, manifest = data
    stage = TorchStageConfig(epochs=3, batch_size=6, lr=0.1, progress=False,
                             head={"kind": "cosface", "margin": 2.0})  # fmt: skip
    result = train(tiny(), manifest, root, stage, seed=1, image_size=32)
    assert max(r["acc"] for r in result.history) > 0


def _shm_slots() -> set[str]:
    """This process's loader slots in /dev/shm (Linux)."""
    import os

    from vlrface.data.loader import SLOT_PREFIX

    mine = f"{SLOT_PREFIX}{os.getpid()}_"
    return {n for n in os.listdir("/dev/shm") if n.startswith(mine)}


def test_process_loader_trains_the_same_weights_and_leaks_no_shared_memory(data, tmp_path):
    """``loader_kind: process``: batches computed ahead by 2 spawned processes through shared
    memory give the weights and history of the inline loader, bit for bit, with a curriculum
    (the policy at each batch's own step) and a teacher (the HR batch); a run stopped by an
    exception frees its slots, and resuming it mid-epoch (another loader start) still lands on
    the same bits. The loader never enters the checkpoint's fingerprint."""
    import os

    from vlrface.training.torch import _fingerprint

    root, manifest = data
    base = {**STAGE, "teacher": {"lam": 0.1}}  # 4 steps/epoch, 12 steps
    inline = TorchStageConfig(**base)
    procs = TorchStageConfig(**base, loader_workers=2, loader_kind="process")
    assert _fingerprint(procs, 1, manifest) == _fingerprint(inline, 1, manifest)
    teacher = tiny(seed=5)
    full = train(tiny(), manifest, root, inline, 1, image_size=32, teacher=teacher)
    want = params(full.model)

    linux = os.path.isdir("/dev/shm")
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Kill):
        train(tiny(), manifest, root, procs, 1, image_size=32, teacher=teacher,
              checkpoint_dir=ckpt, on_step=killer(7))  # fmt: skip
    assert not linux or not _shm_slots()
    slots = []  # the slots in use at each step: the batches did come through shared memory
    in_use = lambda *_: slots.append(len(_shm_slots()))  # noqa: E731
    resumed = train(tiny(seed=99), manifest, root, procs, 1, image_size=32, teacher=teacher,
                    checkpoint_dir=ckpt, on_step=in_use)  # fmt: skip
    assert not linux or (not _shm_slots() and max(slots) == 3)  # 2 ahead + the one in use
    assert resumed.resumed_from == 6 and resumed.steps == 12
    assert same_bits(params(resumed.model), want)
    assert same_bits(params(resumed.head), params(full.head))
    assert resumed.history == full.history
