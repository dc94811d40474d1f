"""The Keras (larq/LCE) training pipeline's configuration: a strict schema, so a typo fails
before any work. The shared sections are ``vlrface.config.common``'s.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from vlrface.config.common import (
    PipelineBase,
    RegistryConfig,
    ScheduleConfig,
    Section,
    StageBase,
    TeacherBase,
    VLRConfig,
    deprecated,
    policy_builds,
    validate,
    zoo_name,
)


class ModelConfig(Section):
    name: str = "binaryfacenet"  # a Keras model of the zoo (vlrface.models.zoo)
    # a checkpoint to fine-tune from, skipping pre-training: the authors' .h5, our .keras, or a
    # registered version (models:/<name>@<alias> or /<version>: its Keras backbone, verified)
    pretrained: str | None = None
    # widths: binaryfacenet one int (default 64); binaryfacenet_lce one int or the widths of its
    # 28/14/7 px stages (default [64, 96, 192]); the baselines have their papers' widths
    channels: int | list[int] | None = None
    # binaryfacenet_lce only: a float shortcut (2x2 average pool, 1x1 conv, BN) across each LFE
    # block's strided binary conv (default false)
    shortcuts: bool | None = None
    # DoReFa k-bits per block, binaryfacenet only
    embedding: int = Field(128, ge=2)
    k_bits: dict[str, int] = Field(
        default_factory=lambda: {"head": 1, "gfe": 1, "lfe1": 1, "lfe2": 1}
    )

    @field_validator("name")
    @classmethod
    def _in_the_zoo(cls, v: str) -> str:
        return zoo_name(v, "keras")

    @model_validator(mode="after")
    def _channels_fit_the_model(self):
        c = self.channels
        if c is None:
            return self
        widths = c if isinstance(c, list) else [c]
        if min(widths) < 4:
            raise ValueError(f"channels must be >= 4, got {c}")
        if self.name == "binaryfacenet" and isinstance(c, list):
            raise ValueError("binaryfacenet takes one channel width")
        from vlrface.models.zoo import entry

        if "channels" not in entry(self.name).options:
            raise ValueError(f"{self.name} has its paper's widths; remove 'channels'")
        return self

    @model_validator(mode="after")
    def _shortcuts_fit_the_model(self):
        from vlrface.models.zoo import entry

        if self.shortcuts is not None and "shortcuts" not in entry(self.name).options:
            raise ValueError(f"{self.name} has no 'shortcuts' option; remove it")
        return self


class TeacherConfig(TeacherBase):
    """A frozen teacher for cross-resolution distillation (T-C): ``path``, a saved Keras model
    (.keras or full-model .h5), or ``model`` + ``checkpoint`` (a model of that config whose
    weights are copied layer by layer from the checkpoint). The loss adds
    ``lam * MSE(teacher(HR), student(degraded))`` (``reduction`` ``mean`` or eq. 1's ``sum``;
    ``distance: cosine`` compares the unit-normalised embeddings instead)."""

    path: str | None = None
    model: ModelConfig | None = None
    checkpoint: str | None = None
    # embed the training faces (as is and mirrored) with the teacher once, before the stage,
    # instead of running it every step (vlrface.training.keras.embedding_table)
    cache: bool = False

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.model is None):
            raise ValueError("give either 'path' or 'model' (with 'checkpoint')")
        if self.model is not None and not self.checkpoint:
            raise ValueError("'model' needs 'checkpoint' (the teacher's trained weights)")
        if self.path is not None and self.checkpoint:
            raise ValueError("'checkpoint' goes with 'model'; 'path' is a whole saved model")
        return self


class _PlateauConfig(Section):
    """The deprecated ``plateau:`` block (now ``schedule: {kind: plateau, ...}``)."""

    patience: int = Field(2, ge=1)
    factor: float = Field(0.1, gt=0, lt=1)
    threshold: float = Field(1e-4, ge=0)
    min_lr: float = Field(0.0, ge=0)


_OLD_HEAD_KEYS = ("loss", "arcface_scale", "arcface_margin", "loss_params")


class StageConfig(StageBase):
    """A Keras training stage: the shared keys (``vlrface.config.common.StageBase``: ``head``,
    ``schedule``, ``degrade``, ...) and the Keras trainer's own. The keys of earlier versions
    (``loss``, ``arcface_scale``, ``arcface_margin``, ``loss_params``, ``policy``, ``vlr``,
    ``schedule: step|plateau`` with ``milestones``, ``gamma``, ``plateau``) still work, each
    with one deprecation line."""

    epochs: int = Field(ge=1)
    # the paper's schedule (BinaryFaceNet §3.2) when none is given
    schedule: ScheduleConfig = Field(
        default_factory=lambda: ScheduleConfig(kind="step", milestones=[9, 15, 18])
    )
    # at most this many batches per epoch (a random subset of the epoch's shuffled faces);
    # null: every full batch. For a CPU-sized fine-tune of a large training set.
    steps_per_epoch: int | None = Field(None, ge=1)
    teacher: TeacherConfig | None = None
    # the new head: random centres, or the starting backbone's class means (a fine-tune from a
    # pre-trained backbone whose head does not fit the new classes)
    head_init: Literal["random", "class_means"] = "random"
    # BatchNormalization in inference mode (moving statistics, scale and offset kept): a
    # fine-tune on degraded faces then cannot shift the statistics the HR faces are normalised by
    freeze_bn: bool = False
    # layers that keep their starting weights: `quantized` (larq's binary/quantized layers: a
    # fine-tune then trains only the full-precision ones, so no binary weight flips sign) or
    # `float` (the full-precision layers: only the quantized ones train); null: every layer
    freeze: Literal["quantized", "float"] | None = None
    # weight-space ensemble with the stage's starting backbone (WiSE-FT: Wortsman et al., "Robust
    # fine-tuning of zero-shot models", CVPR 2022): the stage ends with alpha x trained + (1 -
    # alpha) x starting weights (moving BN statistics included); null: the trained weights.
    # Meant for a fine-tune of a pre-trained backbone, which it pulls back towards what it knew.
    weight_ensemble: float | None = Field(None, gt=0, le=1)
    # output-space ensemble with the stage's starting backbone (the same paper's other
    # ensemble): the stage's model becomes both backbones side by side, its embedding the unit
    # vector of alpha x the trained one's + (1 - alpha) x the starting one's (each unit-length
    # first). Twice the inference cost. Binary-weight nets do not interpolate in weight space;
    # their embeddings do. null: the trained backbone alone.
    output_ensemble: float | None = Field(None, gt=0, lt=1)
    # the backbone ends as the exponential moving average of its weights over the stage (decay
    # d per step, warmed up as min(d, (1 + t) / (10 + t)); BN statistics averaged too; with
    # weight_ensemble, the average is what is blended); null: the last step's weights
    ema: float | None = Field(None, gt=0, lt=1)
    # a folder keeping the teacher's / head init's embedding tables between runs (keyed by
    # the weights and faces); null: computed in each run
    embedding_cache: str | None = None
    checkpoint_every: int | None = Field(None, ge=1)  # steps
    keep_checkpoints: int = Field(2, ge=1)
    resume: bool = False  # continue from checkpoint_dir's last checkpoint
    # multi_worker with `processes: N` (> 1) trains on N local worker processes
    # (vlrface.distributed); with `processes: 1` the cluster comes from TF_CONFIG
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    mixed_precision: bool = False  # GPU only; ignored (and logged) on a CPU

    DISTRIBUTED: ClassVar[str] = "strategy: multi_worker"

    def _distributed(self) -> bool:
        return self.strategy == "multi_worker"

    # deprecated keys, read once and translated (``translate``); never dumped
    loss: str | None = Field(None, exclude=True)
    arcface_scale: float | None = Field(None, exclude=True)
    arcface_margin: float | None = Field(None, exclude=True)
    loss_params: dict[str, float | str] | None = Field(None, exclude=True)
    policy: dict[str, Any] | None = Field(None, exclude=True)
    vlr: VLRConfig | None = Field(None, exclude=True)
    milestones: list[int] | None = Field(None, exclude=True)
    gamma: float | None = Field(None, exclude=True)
    plateau: _PlateauConfig | None = Field(None, exclude=True)

    ALIASES: ClassVar[dict[str, str]] = {
        "loss": "head.kind",
        "arcface_scale": "head.scale",
        "arcface_margin": "head.margin",
        "loss_params": "head.<param>",
        "policy": "degrade",
        "vlr": "degrade: {kind: fixed, ...}",
        "milestones": "schedule.milestones",
        "gamma": "schedule.gamma",
        "plateau": "schedule: {kind: plateau, ...} (its patience p is schedule.patience p - 1)",
    }

    @field_validator("policy")
    @classmethod
    def _old_policy_builds(cls, v):
        return policy_builds(v)

    @model_validator(mode="after")
    def _stage_is_consistent(self):
        if (self.checkpoint_every or self.resume) and not self.checkpoint_dir:
            raise ValueError("'checkpoint_every' and 'resume' need 'checkpoint_dir'")
        if self.weight_ensemble is not None and self.output_ensemble is not None:
            raise ValueError("give 'weight_ensemble' or 'output_ensemble', not both")
        return self

    @classmethod
    def translate(cls, raw: dict) -> dict:
        old_head = [
            k for k in ("loss", "arcface_scale", "arcface_margin", "loss_params") if k in raw
        ]
        if old_head:
            if "head" in raw:
                raise ValueError(f"give 'head' or the deprecated {old_head}, not both")
            for key in old_head:
                deprecated(key, cls.ALIASES[key])
            kind = raw.pop("loss", "arcface")
            params = dict(raw.pop("loss_params", None) or {})
            scale, margin = raw.pop("arcface_scale", None), raw.pop("arcface_margin", None)
            if kind == "arcface":  # the arcface_* keys applied to ArcFace only
                params |= {k: v for k, v in (("scale", scale), ("margin", margin)) if v is not None}
            raw["head"] = {"kind": kind, **params}
        old_degrade = [k for k in ("policy", "vlr") if k in raw]
        if old_degrade:
            if "degrade" in raw or len(old_degrade) == 2:
                raise ValueError(f"give 'degrade' only, not {old_degrade} with it or each other")
            key = old_degrade[0]
            deprecated(key, cls.ALIASES[key])
            value = raw.pop(key)
            if key == "vlr":
                value = VLRConfig.model_validate(value or {}).policy_dict()
            raw["degrade"] = value
        old_schedule = isinstance(raw.get("schedule"), str)
        old_keys = [k for k in ("milestones", "gamma", "plateau") if k in raw]
        if old_schedule or old_keys:
            if "schedule" in raw and not old_schedule:
                raise ValueError(f"give 'schedule: {{kind: ...}}' or the deprecated {old_keys}")
            kind = raw.pop("schedule", "step")
            if old_schedule:
                deprecated("schedule: " + kind, "schedule: {kind: " + kind + "}")
            for key in old_keys:
                deprecated(key, cls.ALIASES[key])
            milestones, gamma = raw.pop("milestones", [9, 15, 18]), raw.pop("gamma", 0.1)
            plateau = _PlateauConfig.model_validate(raw.pop("plateau", None) or {})
            if kind == "plateau":
                raw["schedule"] = {
                    "kind": "plateau",
                    "patience": plateau.patience - 1,  # the old count included the last epoch
                    "factor": plateau.factor,
                    "threshold": plateau.threshold,
                    "min_lr": plateau.min_lr,
                }
            else:
                raw["schedule"] = {"kind": kind, "milestones": milestones, "gamma": gamma}
        return raw


class ExportConfig(Section):
    parity_min_cosine: float = Field(0.99, ge=-1, le=1)
    parity_samples: int = Field(16, ge=1)
    # int8 for the float parts, ranges calibrated on this many training images
    int8: bool = False
    int8_calibration_samples: int = Field(64, ge=1)


class LatencyConfig(Section):
    budget_ms: dict[str, float] = Field(default_factory=lambda: {"raspberry-pi-4": 150.0})
    # auto: the best source available (vlrface.latency.sources): measured on an arm64 host with
    # benchmark_binary and host_device; else emulated when benchmark_binary is set and
    # qemu-aarch64 is on PATH; else estimated by the ARM cost model
    backend: Literal["auto", "estimated", "emulated", "measured"] = "auto"
    # an aarch64 lce_benchmark_model: LCE's lce_benchmark_model_aarch64 release, or (dev/CI)
    # ../shared/tools/lce-aarch64/bin/lce_benchmark_model; relative paths: from the working dir
    benchmark_binary: str | None = None
    sysroot: str | None = None  # its shared libraries, for qemu-aarch64 -L (emulated)
    host_device: str | None = None  # which budgeted device this arm64 host is
    # when the chosen source cannot run: true = use the cost model (one warning line, tag
    # latency.fallback); false = fail the step
    fallback: bool = True

    @field_validator("budget_ms")
    @classmethod
    def _known_devices(cls, v: dict[str, float]) -> dict[str, float]:
        from vlrface.latency.estimate import devices

        unknown = sorted(set(v) - set(devices()))
        if unknown or not v:
            raise ValueError(f"unknown device(s) {unknown}; known: {sorted(devices())}")
        return v

    @model_validator(mode="after")
    def _measured_needs_a_host(self):
        if self.backend == "measured" and not (self.benchmark_binary and self.host_device):
            raise ValueError("backend 'measured' needs benchmark_binary and host_device")
        if self.backend == "emulated" and not self.benchmark_binary:
            raise ValueError("backend 'emulated' needs benchmark_binary (and usually sysroot)")
        if self.host_device and self.host_device not in self.budget_ms:
            raise ValueError(f"host_device {self.host_device!r} has no entry in budget_ms")
        return self


class PipelineConfig(PipelineBase):
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: StageConfig | None = None  # required unless model.pretrained is given
    finetune: StageConfig
    export: ExportConfig = Field(default_factory=ExportConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)


def parse(raw: dict, source: str = "config") -> PipelineConfig:
    """Validate a Keras pipeline's configuration; ``ConfigError`` naming the first bad key."""
    return validate(raw, source, PipelineConfig)
