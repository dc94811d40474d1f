"""The training pipeline's configuration: a strict schema, so a typo fails before any work.

``configs/<profile>.yaml`` holds ZenML run settings and, under ``parameters:``, one section per
concern below. Unknown keys anywhere are errors that name the key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vlrface.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticData(Section):
    identities: int = Field(150, ge=2)
    images_per_identity: int = Field(10, ge=2)
    seed: int = 0


class DataConfig(Section):
    root: str = "data/casia-webface-synthetic"
    # the training set's release layout: a name of vlrface.data.datasets with role "train"
    layout: Literal[
        "casia_webface",
        "casia_webface_pack",
        "ms1m_retinaface",
        "vggface2",
        "tinyface",
        "survface",
        "scface",
    ] = "casia_webface"
    on_error: Literal["raise", "skip"] = "raise"  # bad records: stop, or skip and count
    dvc_file: str = "data.dvc"
    name: str = "demo"  # names the metrics: eval.<name>.<variant>.<res>.<metric>
    synthetic: bool = True
    test_fraction: float = Field(0.2, gt=0, lt=1)
    image_size: int = 112
    min_images_per_identity: int = Field(2, ge=2)


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


class VLRConfig(Section):
    probability: float = Field(0.0, ge=0, le=1)
    sizes: list[int] = Field(default_factory=lambda: [7, 14, 28, 56])
    down: str = "area"
    up: str = "area"


class StageConfig(Section):
    epochs: int = Field(ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(0.01, gt=0)
    milestones: list[int] = Field(default_factory=lambda: [9, 15, 18])
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    arcface_scale: float = 16.0
    arcface_margin: float = 0.5
    flip: bool = True
    vlr: VLRConfig = Field(default_factory=VLRConfig)


class EvalConfig(Section):
    resolutions: list[int] = Field(default_factory=lambda: [7, 14, 28])
    pairs: int = Field(600, ge=20)
    folds: int = Field(10, ge=2)
    far: float = Field(1e-3, gt=0, lt=1)
    flip: bool = True
    down: str = "area"
    up: str = "area"


class ExportConfig(Section):
    parity_min_cosine: float = Field(0.99, ge=-1, le=1)
    parity_samples: int = Field(16, ge=1)
    # int8 for the float parts, ranges calibrated on this many training images
    int8: bool = False
    int8_calibration_samples: int = Field(64, ge=1)


class LatencyConfig(Section):
    budget_ms: dict[str, float] = Field(default_factory=lambda: {"raspberry-pi-4": 150.0})
    # auto: measure when this host is arm64 and a benchmark binary is given, else estimate
    backend: Literal["auto", "estimated", "measured"] = "auto"
    benchmark_binary: str | None = None  # LCE's lce_benchmark_model (aarch64 build)
    host_device: str | None = None  # which budgeted device this arm64 host is

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
        if self.host_device and self.host_device not in self.budget_ms:
            raise ValueError(f"host_device {self.host_device!r} has no entry in budget_ms")
        return self

    def measures_here(self) -> bool:
        """Whether the gate runs the model on this host rather than estimating."""
        from vlrface.latency.measure import on_arm

        if self.backend == "measured":
            return True
        return (
            self.backend == "auto"
            and bool(self.benchmark_binary and self.host_device)
            and (on_arm())
        )


class RegistryConfig(Section):
    model_name: str = "binaryfacenet"
    # the metric a challenger must beat the champion on, and by how much
    compare_metric: str = "eval.demo.hr_lr.14.acc"
    min_improvement: float = 0.0


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
        from vlrface.protocols.verification import metric_suffix

        runs = [("hr_hr", self.data.image_size)] + [
            ("hr_lr", r) for r in self.evaluation.resolutions
        ]
        return [
            f"eval.{self.data.name}.{variant}.{res}.{m}"
            for variant, res in runs
            for m in ("acc", "acc_std", metric_suffix(self.evaluation.far))
        ]

    @model_validator(mode="after")
    def _pretrain_or_pretrained(self):
        if self.pretrain is None and not self.model.pretrained:
            raise ValueError("missing required key 'pretrain' (or set model.pretrained)")
        return self

    @model_validator(mode="after")
    def _compare_metric_exists(self):
        if self.registry.compare_metric not in self.metric_names():
            raise ValueError(
                f"registry.compare_metric {self.registry.compare_metric!r} is not a metric this "
                f"configuration logs; e.g. {self.metric_names()[0]!r}"
            )
        return self


def parse(raw: dict, source: str = "config") -> PipelineConfig:
    """Validate a configuration dict; raise ``ConfigError`` naming the first bad key."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # a misspelt key also makes its correct spelling "missing": name the misspelling
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{source}: unknown key '{key}'") from None
        if err["type"] == "missing":
            raise ConfigError(f"{source}: missing required key '{key}'") from None
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:
            raise ConfigError(f"{source}: {msg}") from None
        raise ConfigError(f"{source}: invalid value for '{key}': {msg}") from None
