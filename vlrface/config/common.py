"""The configuration sections both tracks share, and the loader of configuration files.

``configs/<profile>.yaml`` holds ZenML run settings and, under ``parameters:``, one section per
concern. Every section is strict: an unknown key anywhere is an error that names the key. The
track-specific sections live in ``vlrface.config.keras`` and ``vlrface.config.torch``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vlrface.errors import ConfigError, VlrfaceError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticData(Section):
    identities: int = Field(150, ge=2)
    images_per_identity: int = Field(10, ge=2)
    seed: int = 0


TrainingLayout = Literal[
    "casia_webface",
    "casia_webface_pack",
    "ms1m_retinaface",
    "vggface2",
    "tinyface",
    "survface",
    "scface",
]


class DatasetEntry(Section):
    """One release of a combined training set (``data.datasets``)."""

    layout: TrainingLayout
    root: str  # relative to data.root

    @field_validator("root")
    @classmethod
    def _relative(cls, v: str) -> str:
        if Path(v).is_absolute() or ".." in Path(v).parts:
            raise ValueError(f"{v!r} must be a folder under data.root (relative, no '..')")
        return v


class DataConfig(Section):
    root: str = "data/casia-webface-synthetic"
    # the training set's release layout: a name of vlrface.data.datasets with role "train"
    layout: TrainingLayout = "casia_webface"
    # several releases combined into one training set (vlrface.data.training_set), instead of
    # `layout`; e.g. TinyFace + SurvFace. Identities stay apart (<layout>:<id>) unless the
    # identity_mapping CSV (source,identity,global_identity) merges them.
    datasets: list[DatasetEntry] | None = None
    identity_mapping: str | None = None
    # SCface protocol 50/80: subjects 1..subjects fine-tune, the others are test subjects
    subjects: int | None = Field(None, ge=1)
    on_error: Literal["raise", "skip"] = "raise"  # bad records: stop, or skip and count
    # the DVC pointer that versions `root`; null for data DVC does not track (a read-only pack
    # outside the repo): then the version is the md5 of the root's content (data.versioning)
    dvc_file: str | None = "data.dvc"
    name: str = "demo"  # names the metrics: eval.<name>.<variant>.<res>.<metric>
    synthetic: bool = True
    test_fraction: float = Field(0.2, gt=0, lt=1)
    image_size: int = 112
    min_images_per_identity: int = Field(2, ge=2)
    # training reads aligned faces only (vlrface.data.alignment): auto = the release's own
    # landmarks where it has them, the face detector otherwise, nothing for aligned releases;
    # none is refused for a raw release
    align: Literal["auto", "landmarks", "detector", "none"] = "auto"
    align_workers: int | None = Field(None, ge=1)  # processes; default every core
    align_dir: str = ".cache/aligned"  # aligned copies, one folder per data version

    @model_validator(mode="after")
    def _one_source(self):
        if self.datasets is not None:
            if "layout" in self.model_fields_set:
                raise ValueError("give data.layout or data.datasets, not both")
            if len(self.datasets) < 2:
                raise ValueError("data.datasets combines two or more releases")
        elif self.identity_mapping:
            raise ValueError("data.identity_mapping needs data.datasets")
        return self

    def layouts(self) -> list[str]:
        """The release layouts this configuration reads."""
        return [d.layout for d in self.datasets] if self.datasets else [self.layout]


class VLRConfig(Section):
    """The deprecated ``vlr`` shorthand for a fixed ``VLRPolicy`` (``degrade`` takes any
    policy); read as ``degrade: {kind: fixed, ...}``."""

    probability: float = Field(0.0, ge=0, le=1)
    sizes: list[int] = Field(default_factory=lambda: [7, 14, 28, 56])
    down: str = "area"
    up: str = "area"

    def policy_dict(self) -> dict | None:
        """The shorthand as a ``policy_from_config`` dict (``None`` at probability 0)."""
        if self.probability == 0:
            return None
        return {"kind": "fixed", "probability": self.probability, "sizes": list(self.sizes),
                "down": self.down, "up": self.up}  # fmt: skip


def zoo_name(name: str, framework: str) -> str:
    """``name`` if it is a ``framework`` model of the zoo (``vlrface.models.zoo``); a
    ``ValueError`` naming the known ones otherwise."""
    from vlrface.models.zoo import names

    if name not in names(framework):
        raise ValueError(f"unknown model {name!r}; known: {', '.join(names(framework))}")
    return name


class HeadConfig(Section):
    """The loss head: ``kind``, a row of ``vlrface.losses.heads.LOSS_HEADS``, and that head's
    parameters beside it (``{kind: arcface, scale: 16, margin: 0.5}``); a parameter left out
    takes the head's default. The table says which parameters each kind takes."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str = "arcface"

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        from vlrface.losses.heads import LOSS_HEADS, LOSSES

        if v not in LOSS_HEADS:
            raise ValueError(f"unknown loss {v!r}; known: {', '.join(LOSSES)}")
        return v

    @model_validator(mode="after")
    def _params_fit_the_kind(self):
        from vlrface.losses.heads import check_params

        self.__pydantic_extra__.update(check_params(self.kind, self.params()))
        return self

    def params(self) -> dict:
        """The head's keyword arguments (its parameters given in the configuration)."""
        return dict(self.__pydantic_extra__ or {})


class ScheduleConfig(Section):
    """The learning rate per epoch (``vlrface.training.common.LRSchedule``). ``step``: lr *
    gamma**k after each of ``milestones`` (epochs); ``constant``; ``plateau``: when the epoch's
    mean training loss has not improved by ``threshold`` (relative) for more than ``patience``
    epochs, go to the next of ``levels`` (absolute learning rates), or multiply by ``factor``."""

    kind: Literal["step", "plateau", "constant"] = "step"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0, le=1)
    factor: float = Field(0.2, gt=0, lt=1)
    levels: list[float] | None = None
    patience: int = Field(1, ge=0)
    threshold: float = Field(1e-3, ge=0)
    min_lr: float = Field(0.0, ge=0)
    # linear warm-up: over the stage's first N optimizer steps the rate rises from lr / N to the
    # schedule's lr (arcface_torch's warmup; a fine-tune's first full-rate steps can wreck what
    # the pre-trained net knew before the loss has a useful direction); 0: none
    warmup_steps: int = Field(0, ge=0)

    @field_validator("levels")
    @classmethod
    def _decreasing(cls, v):
        if v is not None and (not v or any(b >= a for a, b in zip(v, v[1:], strict=False))):
            raise ValueError(f"levels must be a non-empty, strictly decreasing list, got {v}")
        return v


class TeacherBase(Section):
    """The distillation term both tracks' teachers add: ``lam`` x the distance between the
    frozen teacher's features of the HR face and the student's of its degraded copy
    (cross-resolution T-C, Eq. 1). ``reduction``: ``mean`` (MSE, the authors' code) or ``sum``
    (Eq. 1 as printed); ``distance``: ``mse`` on the features as they are, ``cosine`` on the
    unit-normalised ones (2 - 2 cos per sample, immune to the student shrinking its scale).
    ``head_weight`` scales the margin head's cross-entropy beside it (1: the recipe's sum; 0:
    distillation alone, the student learning only to reproduce the teacher's HR features)."""

    lam: float = Field(0.1, ge=0)
    reduction: Literal["mean", "sum"] = "mean"
    distance: Literal["mse", "cosine"] = "mse"
    head_weight: float = Field(1.0, ge=0)


log = logging.getLogger("vlrface.config")
_TOLD: set[str] = set()  # deprecated keys already named in this parse (one line each)


def deprecated(old: str, new: str) -> None:
    """One warning line per deprecated key and parse, naming the key that replaces it."""
    if old not in _TOLD:
        _TOLD.add(old)
        log.warning("config key '%s' is deprecated (it still works): use '%s'", old, new)


def policy_builds(v: dict | None) -> dict | None:
    """``v`` if it is a valid ``vlrface.degrade`` policy mapping (or None); ``ValueError``
    naming the bad key otherwise."""
    if v is None:
        return v
    from vlrface.degrade import policy_from_config

    probe = dict(v)
    if probe.get("kind") == "curriculum":
        probe.setdefault("total_steps", 1)  # the stage's steps, known when training starts
    policy_from_config(probe)  # raises ValueError naming the bad key
    return v


class StageBase(Section):
    """The keys every training stage of both tracks shares (``vlrface.config.keras.StageConfig``
    and ``vlrface.config.torch.TorchStageConfig`` add their own). Keys of earlier versions are
    read as aliases: ``ALIASES`` (old key -> new key), translated by ``translate``; each logs one
    deprecation line."""

    ALIASES: ClassVar[dict[str, str]] = {}

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(0.01, gt=0)
    # sgd: SGD with momentum (SGDW); adam: Adam (AdamW), the optimizer binary networks are
    # usually trained with (larq zoo's QuickNet; Liu et al., ICML 2021), ``momentum`` its beta_1
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    # decoupled (SGDW / AdamW): w -= lr * weight_decay * w every step, outside the gradient
    weight_decay: float = Field(5e-4, ge=0)
    head: HeadConfig = Field(default_factory=HeadConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    # a vlrface.degrade policy (policy_from_config) applied to the student's input, or None. A
    # curriculum without total_steps spans the stage's steps.
    degrade: dict[str, Any] | None = None
    flip: bool = True
    checkpoint_dir: str | None = None
    # workers that decode (and degrade) batches ahead; batches are the same whatever the number
    loader_workers: int = Field(0, ge=0)
    # what runs `loader_workers`: threads, or spawned processes writing each batch into shared
    # memory (vlrface.data.loader.SlotWorkers; process needs loader_workers >= 1); the batches,
    # and so the trained weights, are the same either way
    loader_kind: Literal["thread", "process"] = "thread"
    # training processes started on this machine (vlrface.distributed): > 1 goes with the Keras
    # track's `strategy: multi_worker` (TF_CONFIG on loopback ports) or the PyTorch track's
    # `ddp: true` (torchrun, gloo); the chief (worker / rank 0) alone writes checkpoints and the
    # result. 1: this process only (on a cluster the workers come from outside: TF_CONFIG /
    # torchrun). Not `workers`: that is the PyTorch stages' old name of `loader_workers`.
    processes: int = Field(1, ge=1)

    # the key that turns a stage distributed, for ``processes``' message (each track's own)
    DISTRIBUTED: ClassVar[str] = ""

    def _distributed(self) -> bool:
        """Whether the stage asks for a distributed strategy (each track says which key)."""
        return False

    @field_validator("degrade")
    @classmethod
    def _policy_builds(cls, v):
        return policy_builds(v)

    @model_validator(mode="after")
    def _processes_need_a_distributed_stage(self):
        if self.processes > 1 and not self._distributed():
            raise ValueError(
                f"processes: {self.processes} needs {self.DISTRIBUTED} (one process otherwise)"
            )
        if self.loader_kind == "process" and self.loader_workers == 0:
            raise ValueError("loader_kind: process needs loader_workers >= 1")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _aliases(cls, data, handler):
        old = isinstance(data, dict) and (
            set(data) & set(cls.ALIASES) or isinstance(data.get("schedule"), str)
        )
        if not old:
            return handler(data)
        probe = dict(data)
        if isinstance(probe.get("schedule"), str):
            probe.pop("schedule")
        handler(probe)  # the old keys' values are checked as the old schema did, by name
        return handler(cls.translate(dict(data)))

    @classmethod
    def translate(cls, raw: dict) -> dict:
        """``raw`` with the deprecated keys replaced by the new ones (``ValueError`` where both
        are given)."""
        for old, new in cls.ALIASES.items():
            if old in raw:
                if new in raw:
                    raise ValueError(f"give '{new}' or the deprecated '{old}', not both")
                deprecated(old, new)
                raw[new] = raw.pop(old)
        return raw


class ProtocolEntry(Section):
    """One benchmark protocol the evaluate step runs (``vlrface.protocols.suite``).

    ``name``: a protocol of ``vlrface.protocols.runners.TABLE``; ``root``: its release
    folder (checked when the step runs); ``resolutions``: probe sizes (default: the
    protocol's); ``files``: its protocol files (the row's ``files``, e.g. lfw ``pairs``),
    relative to ``root`` unless absolute; ``model``: ``keras`` (the fine-tuned Keras model) or
    ``lce`` (that model converted to an LCE flatbuffer in the step and run by LCE's interpreter,
    one thread). Metric names do not depend on ``model``. ``align``: how raw faces are aligned
    (``runners.ALIGNABLE`` protocols; ``common.face_loader``): the release's landmarks, else the
    face detector (``auto``), or ``landmarks`` / ``detector`` / ``none``."""

    name: str
    root: str
    resolutions: list[int] | None = None
    files: dict[str, str] = Field(default_factory=dict)
    model: Literal["keras", "lce"] = "keras"
    align: Literal["auto", "landmarks", "detector", "none"] = "auto"

    @field_validator("name")
    @classmethod
    def _known_protocol(cls, v: str) -> str:
        from vlrface.protocols.runners import TABLE

        if v not in TABLE:
            raise ValueError(f"unknown protocol {v!r}; known: {', '.join(TABLE)}")
        return v

    @field_validator("resolutions")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(r < 1 for r in v):
            raise ValueError(f"resolutions must be >= 1 px, got {v}")
        return v

    @model_validator(mode="after")
    def _known_files(self):
        from vlrface.protocols.runners import TABLE

        allowed = tuple(TABLE[self.name].files)
        unknown = sorted(set(self.files) - set(allowed))
        if unknown:
            raise ValueError(
                f"files {unknown} do not apply to {self.name}; it takes "
                f"{', '.join(allowed) if allowed else 'no protocol files'}"
            )
        return self


class EvalConfig(Section):
    resolutions: list[int] = Field(default_factory=lambda: [7, 14, 28])
    pairs: int = Field(600, ge=20)
    folds: int = Field(10, ge=2)
    far: float = Field(1e-3, gt=0, lt=1)
    flip: bool = True
    down: str = "area"
    up: str = "area"
    # benchmark protocols run on the fine-tuned model after the demo pairs (flip/down/up above
    # apply to them too); each protocol at most once, so its metric names stay unique
    protocols: list[ProtocolEntry] = Field(default_factory=list)

    @field_validator("protocols")
    @classmethod
    def _once_each(cls, v: list[ProtocolEntry]) -> list[ProtocolEntry]:
        names = [e.name for e in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"protocol(s) {twice} listed more than once")
        return v


class RegistryConfig(Section):
    model_name: str = "binaryfacenet"
    # the metric a challenger must beat the champion on, and by how much
    compare_metric: str = "eval.demo.hr_lr.14.acc"
    min_improvement: float = 0.0
    # a promotion policy file (mlflow/promotion.yaml); when given it replaces the two keys above
    policy: str | None = None


class PipelineBase(Section):
    """What both tracks' pipeline configurations share: the seed, the data, the synthetic demo
    set and the evaluation, a pre-training stage unless ``model.pretrained`` is given, and a
    promotion metric that the run logs. Each track adds ``model``, ``pretrain``, ``finetune``,
    ``export``, ``latency`` and ``registry`` of its own types."""

    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    synthetic: SyntheticData = Field(default_factory=SyntheticData)
    evaluation: EvalConfig = Field(default_factory=EvalConfig)

    def metric_names(self) -> list[str]:
        """The names of the metrics the pipeline's evaluate step logs for this configuration
        (the held-out verification's and ``evaluation.protocols``' known ahead)."""
        return evaluation_metric_names(self.data, self.evaluation)

    def metric_prefixes(self) -> list[str]:
        """Prefixes under which any metric name may be logged (protocols whose names depend on
        the data)."""
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


def heldout_metric_names(data: DataConfig, evaluation: EvalConfig) -> list[str]:
    """The names the in-run verification on held-out identities logs (both pipelines)."""
    from vlrface.protocols.verification import metric_suffix

    runs = [("hr_hr", data.image_size)] + [("hr_lr", r) for r in evaluation.resolutions]
    return [
        f"eval.{data.name}.{variant}.{res}.{m}"
        for variant, res in runs
        for m in ("acc", "acc_std", metric_suffix(evaluation.far))
    ]


def evaluation_metric_names(data: DataConfig, evaluation: EvalConfig) -> list[str]:
    """The names the evaluate step logs (both tracks): the held-out verification's, and each
    of ``evaluation.protocols``' names that are known before the data are read."""
    names = heldout_metric_names(data, evaluation)
    if evaluation.protocols:
        from vlrface.protocols.suite import known_metric_names

        if data.name in {e.name for e in evaluation.protocols}:
            raise ValueError(
                f"data.name {data.name!r} is also a protocol in evaluation.protocols: "
                "their metric names would collide; rename data.name"
            )
        for entry in evaluation.protocols:
            names += known_metric_names(entry) or []
    return names


def protocol_metric_prefixes(evaluation: EvalConfig) -> list[str]:
    """``eval.<protocol>.`` of configured protocols whose metric names depend on the data
    (``vlrface.protocols.suite``): any name under them may be logged."""
    from vlrface.protocols.suite import KNOWN_AHEAD

    return [f"eval.{e.name}." for e in evaluation.protocols if e.name not in KNOWN_AHEAD]


def check_registry_metrics(registry: RegistryConfig, logged: list[str], prefixes=()) -> None:
    """``ValueError`` unless every metric promotion compares (the policy file's, else
    ``registry.compare_metric``) is one the run logs (or falls under a protocol's ``prefixes``
    whose names depend on the data)."""
    if registry.policy:
        from vlrface.promotion import load_policy

        wanted = [
            (f"{registry.policy}: metric", r.metric) for r in load_policy(registry.policy).metrics
        ]
    else:
        wanted = [("registry.compare_metric", registry.compare_metric)]
    for where, metric in wanted:
        if metric not in logged and not metric.startswith(tuple(prefixes)):
            raise ValueError(
                f"{where} {metric!r} is not a metric this configuration logs; e.g. {logged[0]!r}"
            )


def validate(raw: dict, source: str, schema: type[Section]):
    """Validate a configuration dict against ``schema`` (a track's pipeline configuration);
    raise ``ConfigError`` naming the first bad key."""
    _TOLD.clear()
    try:
        return schema.model_validate(raw)
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


def load_file(path: str | Path, schema: type[Section]):
    """A pipeline configuration file (``configs/*.yaml``: its ``parameters``, or a bare mapping)
    validated against ``schema``; ``ConfigError`` naming the file (and line) for any bytes."""
    import yaml

    from vlrface.fileio import read_text

    path = Path(path)
    try:
        text = read_text(path)
    except VlrfaceError as exc:
        raise ConfigError(str(exc)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}{line}: not valid YAML ({problem})") from None
    except (ValueError, OverflowError, TypeError, RecursionError) as exc:  # e.g. a bad date
        raise ConfigError(f"{path}: not a valid configuration ({str(exc)[:120]})") from None
    if isinstance(raw, dict) and isinstance(raw.get("parameters"), dict):
        raw = raw["parameters"]
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a configuration must be a mapping (of 'parameters')")
    return validate(raw, str(path), schema)
