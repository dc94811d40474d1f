"""The PyTorch pipelines' configuration (``train_crossres``, ``train_squeezefaceposenet``).

The same conventions as ``vlrface.config.common`` (whose sections ``DataConfig``, ``SyntheticData``,
``EvalConfig`` and ``RegistryConfig`` are reused as they are): every section is strict, so an
unknown key is an error that names it, and ``parse_torch`` raises ``ConfigError`` naming the
first bad key. ``TorchStageConfig`` is also what ``vlrface.training.torch.train`` takes.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from vlrface.config.common import (
    DataConfig,
    HeadConfig,
    PipelineBase,
    RegistryConfig,
    Section,
    StageBase,
    TeacherBase,
    validate,
    zoo_name,
)


class TorchModelConfig(Section):
    name: str = "squeezefaceposenet"  # a PyTorch model of the zoo (vlrface.models.zoo)
    # SE-ResNet-50: a projection to this width (None: the 2048-d pool output); SqueezeFacePoseNet:
    # the conv10 width (None: the paper's 1000)
    embedding: int | None = Field(None, ge=2)
    # the network's input side; None keeps the model's own preprocessing (224 / 113 px) with its
    # resize-shorter-side and centre crop; a value resizes the face straight to it (demo sizes)
    input_size: int | None = Field(None, ge=16)
    # a torch checkpoint (``training.torch.save_model``) to start from instead of pre-training
    pretrained: str | None = None

    @field_validator("name")
    @classmethod
    def _in_the_zoo(cls, v: str) -> str:
        return zoo_name(v, "torch")


class TeacherConfig(TeacherBase):
    """Teacher-student (``vlrface.config.common.TeacherBase``; Massoli et al., docs/papers.md,
    Eq. 1); ``checkpoint``: a torch checkpoint; None in a pipeline: the pre-trained (or
    model.pretrained) network."""

    checkpoint: str | None = None


class TorchStageConfig(StageBase):
    """A PyTorch training stage: the shared keys (``vlrface.config.common.StageBase``) and the
    PyTorch trainer's own. ``workers`` (earlier versions) is read as ``loader_workers``; the
    number of training processes is ``processes`` (with ``ddp: true``)."""

    ALIASES: ClassVar[dict[str, str]] = {"workers": "loader_workers"}

    batch_size: int = Field(32, ge=2)
    head: HeadConfig = Field(default_factory=lambda: HeadConfig(kind="softmax"))
    # stop after this many steps (a cap for demos and tests); None: every epoch in full
    max_steps: int | None = Field(None, ge=1)
    # clip the global gradient norm to this (None: no clipping); SqueezeFacePoseNet's descriptor
    # is unnormalised (ReLU + GAP of mean-subtracted 0..255 pixels), so a distillation MSE on it
    # starts in the hundreds and explodes without a clip
    grad_clip_norm: float | None = Field(None, gt=0)
    teacher: TeacherConfig | None = None
    # train only on identities with at least this many training images (SqueezeFacePoseNet
    # drops MS1M users with fewer than 70)
    min_images_per_identity: int = Field(1, ge=1)
    checkpoint_every: int = Field(100, ge=1)  # steps
    # checkpoint_dir None: a folder under the system temp dir named by the stage's inputs (a
    # crashed run resumes there, a finished one deletes it)
    device: str = Field("cpu", pattern=r"^(cpu|auto|cuda(:\d+)?)$")
    # DistributedDataParallel: with `processes: N` (> 1) on N local processes (torchrun, gloo;
    # vlrface.distributed); with `processes: 1` when torch.distributed is initialised from
    # outside (torchrun), else a no-op
    ddp: bool = False
    progress: bool = True

    workers: int | None = Field(None, ge=0, exclude=True)  # deprecated: loader_workers

    DISTRIBUTED: ClassVar[str] = "ddp: true"

    def _distributed(self) -> bool:
        return self.ddp


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


class TorchPipelineConfig(PipelineBase):
    # the pre-training set when it differs from ``data`` (SqueezeFacePoseNet: MS1M, then
    # VGGFace2); None pre-trains on ``data``
    pretrain_data: DataConfig | None = None
    model: TorchModelConfig = Field(default_factory=TorchModelConfig)
    pretrain: TorchStageConfig | None = None  # required unless model.pretrained is given
    finetune: TorchStageConfig
    export: OnnxExportConfig = Field(default_factory=OnnxExportConfig)
    latency: OnnxLatencyConfig = Field(default_factory=OnnxLatencyConfig)
    registry: TorchRegistryConfig = Field(default_factory=TorchRegistryConfig)

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
    def _pretrain_has_no_teacher(self):
        if self.pretrain is not None and self.pretrain.teacher is not None:
            raise ValueError("pretrain.teacher: only the fine-tune stage has a teacher")
        return self


def parse_torch(raw: dict, source: str = "config") -> TorchPipelineConfig:
    """Validate a PyTorch pipeline's configuration; ``ConfigError`` naming the first bad key."""
    return validate(raw, source, TorchPipelineConfig)
