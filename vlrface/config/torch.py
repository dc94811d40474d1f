"""The PyTorch pipelines' configuration (``train_crossres``, ``train_squeezefaceposenet``).

The same conventions as ``vlrface.config.common`` (whose sections ``DataConfig``, ``SyntheticData``,
``EvalConfig`` and ``RegistryConfig`` are reused as they are): every section is strict, so an
unknown key is an error that names it, and ``parse_torch`` raises ``ConfigError`` naming the
first bad key. ``TorchStageConfig`` is also what ``vlrface.training.torch.train`` takes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from vlrface.config.common import (
    DataConfig,
    EvalConfig,
    RegistryConfig,
    Section,
    SyntheticData,
    check_registry_metrics,
    evaluation_metric_names,
    protocol_metric_prefixes,
    validate,
)
from vlrface.models.torch import TORCH_ZOO

HEADS = ("softmax", "arcface", "cosface", "sphereface", "adaface")


class TorchModelConfig(Section):
    name: Literal[TORCH_ZOO] = "squeezefaceposenet"  # type: ignore[valid-type]
    # SE-ResNet-50: a projection to this width (None: the 2048-d pool output); SqueezeFacePoseNet:
    # the conv10 width (None: the paper's 1000)
    embedding: int | None = Field(None, ge=2)
    # the network's input side; None keeps the model's own preprocessing (224 / 113 px) with its
    # resize-shorter-side and centre crop; a value resizes the face straight to it (demo sizes)
    input_size: int | None = Field(None, ge=16)
    # a torch checkpoint (``training_torch.save_model``) to start from instead of pre-training
    pretrained: str | None = None


class HeadConfig(Section):
    kind: Literal["softmax", "arcface", "cosface", "sphereface", "adaface"] = "softmax"
    scale: float | None = Field(None, gt=0)  # None: the head's own default
    margin: float | None = None
    # softmax only: BatchNorm + dropout 0.5 before the FC (SqueezeFacePoseNet §3's head)
    bn_dropout: bool = False


class ScheduleConfig(Section):
    """``step``: lr * gamma**k after each of ``milestones`` (epochs). ``plateau``: when the
    epoch's mean training loss has not improved by ``threshold`` (relative) for ``patience``
    epochs, go to the next of ``levels`` (absolute learning rates), or multiply by ``factor``."""

    kind: Literal["step", "plateau", "constant"] = "step"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0, le=1)
    factor: float = Field(0.2, gt=0, lt=1)
    levels: list[float] | None = None
    patience: int = Field(1, ge=0)
    threshold: float = Field(1e-3, ge=0)
    min_lr: float = Field(0.0, ge=0)

    @field_validator("levels")
    @classmethod
    def _decreasing(cls, v):
        if v is not None and (not v or any(b >= a for a, b in zip(v, v[1:], strict=False))):
            raise ValueError(f"levels must be a non-empty, strictly decreasing list, got {v}")
        return v


class TeacherConfig(Section):
    """Teacher-student (papers/cross-resolution-learning.md §3.2, Eq. 1): a frozen teacher sees
    the HR face, the student its degraded copy; loss = margin + ``lam`` * MSE(features)."""

    # a torch checkpoint; None in a pipeline: the pre-trained (or model.pretrained) network
    checkpoint: str | None = None
    lam: float = Field(0.1, ge=0)
    # "mean": lam * mean squared difference (MSE); "sum": lam * sum over batch and features,
    # Eq. 1 as printed
    reduction: Literal["mean", "sum"] = "mean"
    # mse: the features as they are; cosine: unit-normalised (2 - 2 cos per sample), immune to
    # the student shrinking its embedding (vlrface.losses.torch.pairs.feature_distillation_loss)
    distance: Literal["mse", "cosine"] = "mse"


class TorchStageConfig(Section):
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=2)
    # stop after this many steps (a cap for demos and tests); None: every epoch in full
    max_steps: int | None = Field(None, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    # decoupled: p <- p * (1 - lr * weight_decay) before each SGD step (training_torch docstring)
    weight_decay: float = Field(5e-4, ge=0)
    # clip the global gradient norm to this (None: no clipping); SqueezeFacePoseNet's descriptor
    # is unnormalised (ReLU + GAP of mean-subtracted 0..255 pixels), so a distillation MSE on it
    # starts in the hundreds and explodes without a clip
    grad_clip_norm: float | None = Field(None, gt=0)
    head: HeadConfig = Field(default_factory=HeadConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    # a vlrface.degrade.policy_from_config mapping applied to the student's input, or None. A
    # curriculum without total_steps gets the stage's number of steps.
    degrade: dict | None = None
    teacher: TeacherConfig | None = None
    flip: bool = True
    # train only on identities with at least this many training images (SqueezeFacePoseNet
    # drops MS1M users with fewer than 70)
    min_images_per_identity: int = Field(1, ge=1)
    checkpoint_every: int = Field(100, ge=1)  # steps
    # where the step keeps its resumable checkpoint; None: a folder under the system temp dir
    # named by the stage's inputs (a crashed run resumes there, a finished one deletes it)
    checkpoint_dir: str | None = None
    workers: int = Field(0, ge=0)  # decoding threads; 0 decodes in the training thread
    device: str = Field("cpu", pattern=r"^(cpu|auto|cuda(:\d+)?)$")
    ddp: bool = False  # DistributedDataParallel when torch.distributed is initialised, else no-op
    progress: bool = True

    @field_validator("degrade")
    @classmethod
    def _policy_builds(cls, v):
        if v is None:
            return v
        from vlrface.degrade import policy_from_config

        probe = dict(v)
        if probe.get("kind") == "curriculum":
            probe.setdefault("total_steps", 1)
        policy_from_config(probe)  # raises ValueError naming the key
        return v


class OnnxExportConfig(Section):
    parity_min_cosine: float = Field(0.99, ge=-1, le=1)
    parity_samples: int = Field(8, ge=1)


class OnnxLatencyConfig(Section):
    """The ONNX latency gate. The ARM cost model is for LCE flatbuffers and does not apply;
    a figure is measured only on an arm64 host that says which budgeted device it is. Elsewhere
    the gate records ``latency.source = unavailable`` and ``when_unavailable`` says what the
    gate reports: ``fail`` (the default promotion policy then refuses) or ``defer`` (the gate
    passes with source ``unavailable``; a policy with ``allow_estimated: false`` refuses)."""

    budget_ms: dict[str, float] = Field(default_factory=lambda: {"raspberry-pi-4": 150.0})
    host_device: str | None = None
    # off an arm64 host: count the model's aarch64 instructions under qemu-user
    # (vlrface.latency.emulate; needs `apt-get install qemu-user`, downloads ~210 MB once)
    emulate: bool = False
    when_unavailable: Literal["fail", "defer"] = "fail"
    runs: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _host_in_budget(self):
        from vlrface.latency.estimate import devices

        unknown = sorted(set(self.budget_ms) - set(devices()))
        if unknown or not self.budget_ms:
            raise ValueError(f"unknown device(s) {unknown}; known: {sorted(devices())}")
        if self.host_device and self.host_device not in self.budget_ms:
            raise ValueError(f"host_device {self.host_device!r} has no entry in budget_ms")
        return self


class TorchRegistryConfig(RegistryConfig):
    model_name: str = "squeezefaceposenet"


class TorchPipelineConfig(Section):
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    # the pre-training set when it differs from ``data`` (SqueezeFacePoseNet: MS1M, then
    # VGGFace2); None pre-trains on ``data``
    pretrain_data: DataConfig | None = None
    synthetic: SyntheticData = Field(default_factory=SyntheticData)
    model: TorchModelConfig = Field(default_factory=TorchModelConfig)
    pretrain: TorchStageConfig | None = None  # required unless model.pretrained is given
    finetune: TorchStageConfig
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    export: OnnxExportConfig = Field(default_factory=OnnxExportConfig)
    latency: OnnxLatencyConfig = Field(default_factory=OnnxLatencyConfig)
    registry: TorchRegistryConfig = Field(default_factory=TorchRegistryConfig)

    def metric_names(self) -> list[str]:
        """The names of the metrics ``evaluate_onnx`` will log for this configuration."""
        return evaluation_metric_names(self.data, self.evaluation)

    @model_validator(mode="after")
    def _protocols_on_onnx(self):
        for i, entry in enumerate(self.evaluation.protocols):
            if entry.model != "keras":
                raise ValueError(
                    f"evaluation.protocols.{i}.model: {entry.model!r} is the Keras track's "
                    "flatbuffer; the PyTorch track runs every protocol on its ONNX model"
                )
        return self

    @model_validator(mode="after")
    def _pretrain_or_pretrained(self):
        if self.pretrain is None and not self.model.pretrained:
            raise ValueError("missing required key 'pretrain' (or set model.pretrained)")
        if self.pretrain is not None and self.pretrain.teacher is not None:
            raise ValueError("pretrain.teacher: only the fine-tune stage has a teacher")
        return self

    @model_validator(mode="after")
    def _compare_metric_exists(self):
        check_registry_metrics(
            self.registry, self.metric_names(), protocol_metric_prefixes(self.evaluation)
        )
        return self


def parse_torch(raw: dict, source: str = "config") -> TorchPipelineConfig:
    """Validate a PyTorch pipeline's configuration; ``ConfigError`` naming the first bad key."""
    return validate(raw, source, TorchPipelineConfig)
