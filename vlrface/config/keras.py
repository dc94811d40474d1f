"""The Keras (larq/LCE) training pipeline's configuration: a strict schema, so a typo fails
before any work. The shared sections are ``vlrface.config.common``'s.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vlrface.config.common import (
    DataConfig,
    EvalConfig,
    PlateauConfig,
    RegistryConfig,
    Section,
    SyntheticData,
    VLRConfig,
    check_registry_metrics,
    evaluation_metric_names,
    protocol_metric_prefixes,
    validate,
)


class ModelConfig(Section):
    name: Literal[
        "binaryfacenet",
        "binaryfacenet_lce",
        "quicknet",
        "quicknet_small",
        "quicknet_large",
        "binarydensenet28",
        "binarydensenet37",
        "binarydensenet45",
    ] = "binaryfacenet"
    # a checkpoint to fine-tune from, skipping pre-training: the authors' .h5 or our .keras
    pretrained: str | None = None
    # widths: binaryfacenet one int (default 64); binaryfacenet_lce one int or the widths of its
    # 56/28/14 px stages (default [32, 64, 128]); the baselines have their papers' widths
    channels: int | list[int] | None = None
    # DoReFa k-bits per block, binaryfacenet only
    embedding: int = Field(128, ge=2)
    k_bits: dict[str, int] = Field(
        default_factory=lambda: {"head": 1, "gfe": 1, "lfe1": 1, "lfe2": 1}
    )

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
        if self.name not in ("binaryfacenet", "binaryfacenet_lce"):
            raise ValueError(f"{self.name} has its paper's widths; remove 'channels'")
        return self


#: the keyword arguments each margin head takes from ``loss_params`` (ArcFace: arcface_scale and
#: arcface_margin); ``statistic`` is the Laplacian quality statistic
LOSS_PARAMS = {
    "arcface": (),
    "cosface": ("scale", "margin"),
    "sphereface": ("scale", "margin"),
    "adaface": ("scale", "margin", "h", "t_alpha"),
    "laplacian": ("scale", "quality_scale", "min_margin", "max_margin", "statistic"),
}


class TeacherConfig(Section):
    """A frozen teacher for cross-resolution distillation (T-C): ``path``, a saved Keras model
    (.keras or full-model .h5), or ``model`` + ``checkpoint`` (a model of that config whose
    weights are copied layer by layer from the checkpoint). The loss adds
    ``lam * MSE(teacher(HR), student(degraded))`` (``reduction`` ``mean`` or eq. 1's ``sum``;
    ``distance: cosine`` compares the unit-normalised embeddings instead)."""

    path: str | None = None
    model: ModelConfig | None = None
    checkpoint: str | None = None
    lam: float = Field(0.1, ge=0)
    reduction: Literal["mean", "sum"] = "mean"
    # mse: the features as they are; cosine: unit-normalised (2 - 2 cos per sample), immune to
    # the student shrinking its embedding's scale (vlrface.losses.feature_distillation_loss)
    distance: Literal["mse", "cosine"] = "mse"
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


class StageConfig(Section):
    epochs: int = Field(ge=1)
    batch_size: int = Field(128, ge=2)
    # at most this many batches per epoch (a random subset of the epoch's shuffled faces);
    # null: every full batch. For a CPU-sized fine-tune of a large training set.
    steps_per_epoch: int | None = Field(None, ge=1)
    lr: float = Field(0.01, gt=0)
    # schedule "step": lr * gamma ** (milestones <= epoch); "plateau": see PlateauConfig
    schedule: Literal["step", "plateau"] = "step"
    milestones: list[int] = Field(default_factory=lambda: [9, 15, 18])
    gamma: float = 0.1
    plateau: PlateauConfig = Field(default_factory=PlateauConfig)
    momentum: float = 0.9
    weight_decay: float = 5e-4  # decoupled (SGDW): w -= lr * weight_decay * w every step
    loss: Literal["arcface", "cosface", "sphereface", "adaface", "laplacian"] = "arcface"
    arcface_scale: float = 16.0
    arcface_margin: float = 0.5
    loss_params: dict[str, float | str] = Field(default_factory=dict)  # see LOSS_PARAMS
    flip: bool = True
    vlr: VLRConfig = Field(default_factory=VLRConfig)
    # any vlrface.degrade policy (policy_from_config); a curriculum without total_steps spans
    # the stage's steps. Replaces the 'vlr' shorthand.
    policy: dict[str, Any] | None = None
    teacher: TeacherConfig | None = None
    # the new margin head: random centres, or the starting backbone's class means (a fine-tune
    # from a pre-trained backbone whose head does not fit the new classes)
    head_init: Literal["random", "class_means"] = "random"
    # BatchNormalization in inference mode (moving statistics, scale and offset kept): a
    # fine-tune on degraded faces then cannot shift the statistics the HR faces are normalised by
    freeze_bn: bool = False
    # a folder keeping the teacher's / head init's embedding tables between runs (keyed by
    # the weights and faces); null: computed in each run
    embedding_cache: str | None = None
    checkpoint_every: int | None = Field(None, ge=1)  # steps
    checkpoint_dir: str | None = None
    keep_checkpoints: int = Field(2, ge=1)
    resume: bool = False  # continue from checkpoint_dir's last checkpoint
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    # threads that decode/degrade/batch ahead (vlrface.data.loader); batches are the same
    # whatever the number. 0: one background thread
    loader_workers: int = Field(0, ge=0)
    mixed_precision: bool = False  # GPU only; ignored (and logged) on a CPU

    @field_validator("policy")
    @classmethod
    def _policy_builds(cls, v):
        if v is None:
            return v
        from vlrface.degrade import policy_from_config

        probe = dict(v)
        if probe.get("kind") == "curriculum":
            probe.setdefault("total_steps", 1)  # the stage's steps, known when training starts
        policy_from_config(probe)  # raises ValueError naming the bad key
        return v

    @model_validator(mode="after")
    def _stage_is_consistent(self):
        if self.policy is not None and self.vlr.probability > 0:
            raise ValueError("give either 'vlr' (the shorthand) or 'policy', not both")
        allowed = LOSS_PARAMS[self.loss]
        unknown = sorted(set(self.loss_params) - set(allowed))
        if unknown:
            hint = "use arcface_scale/arcface_margin" if self.loss == "arcface" else allowed
            raise ValueError(f"loss_params {unknown} do not apply to loss {self.loss!r}: {hint}")
        for key, val in self.loss_params.items():
            if (key == "statistic") != isinstance(val, str):
                raise ValueError(f"loss_params.{key} has the wrong type: {val!r}")
        if "statistic" in self.loss_params:
            from vlrface.losses.quality import STATISTICS

            if self.loss_params["statistic"] not in STATISTICS:
                raise ValueError(f"loss_params.statistic must be one of {list(STATISTICS)}")
        if (self.checkpoint_every or self.resume) and not self.checkpoint_dir:
            raise ValueError("'checkpoint_every' and 'resume' need 'checkpoint_dir'")
        return self

    def policy_config(self) -> dict | None:
        """The degradation policy as a ``policy_from_config`` dict (``None``: no degradation)."""
        return dict(self.policy) if self.policy is not None else self.vlr.policy_dict()


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


class PipelineConfig(Section):
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    synthetic: SyntheticData = Field(default_factory=SyntheticData)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: StageConfig | None = None  # required unless model.pretrained is given
    finetune: StageConfig
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    def metric_names(self) -> list[str]:
        """The names of the metrics ``evaluate_model`` will log for this configuration."""
        return evaluation_metric_names(self.data, self.evaluation)

    def metric_prefixes(self) -> list[str]:
        return protocol_metric_prefixes(self.evaluation)

    @model_validator(mode="after")
    def _pretrain_or_pretrained(self):
        if self.pretrain is None and not self.model.pretrained:
            raise ValueError("missing required key 'pretrain' (or set model.pretrained)")
        return self

    @model_validator(mode="after")
    def _compare_metric_exists(self):
        check_registry_metrics(self.registry, self.metric_names(), self.metric_prefixes())
        return self


def parse(raw: dict, source: str = "config") -> PipelineConfig:
    """Validate a Keras pipeline's configuration; ``ConfigError`` naming the first bad key."""
    return validate(raw, source, PipelineConfig)
