"""The promotion policy: what a challenger must show before it becomes ``champion``.

A policy file (``mlflow/promotion.yaml`` is the default) names

- ``metrics``: protocol metrics the challenger must beat the current champion on, each with a
  ``direction`` (``higher`` or ``lower`` is better) and a ``min_improvement``: the challenger must
  be better by *more than* this (``0``: strictly better; a negative value tolerates a regression
  of at most its size, ties included);
- ``latency``: ``budget_ms: pipeline`` (each device's budget the pipeline gated on, recorded on
  the version) or ``budget_ms: {device: ms}``; ``min_source`` the weakest source that counts
  (``estimated`` < ``emulated`` < ``measured``); ``allow_estimated: false`` demands measured
  figures;
- ``parity``: ``cosine_min``, the floor for the version's own format's parity metric
  (``export.lce.parity.cosine_min``, ``export.onnx.parity.cosine_min``: ``vlrface.export.metrics``);
- ``gates``: the pipeline gates (``data``, ``parity``, ``latency``) that must have passed.

Loading is strict: an unknown key is an error naming the key and the file. ``evaluate`` returns a
``Decision`` that holds one ``Rule`` per check, each with the challenger's value, the champion's
value and the threshold, so a refusal always says which numbers failed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vlrface.errors import VlrfaceError
from vlrface.export.metrics import FORMATS, format_of

GATES = ("data", "parity", "latency")
SOURCE_RANK = {"estimated": 0, "emulated": 1, "measured": 2}  # latency.<device>.source
PARITY_METRIC = "export.lce.parity.cosine_min"  # LCE's; each format's: vlrface.export.metrics
DEFAULT_POLICY = Path("mlflow") / "promotion.yaml"


class PolicyError(VlrfaceError):
    """An invalid promotion policy; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricRule(_Section):
    metric: str = Field(min_length=1)
    direction: Literal["higher", "lower"]
    min_improvement: float = 0.0

    @field_validator("min_improvement")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class LatencyRule(_Section):
    # "pipeline": the budgets the pipeline's latency gate used, recorded on each version
    budget_ms: Literal["pipeline"] | dict[str, float] = "pipeline"
    allow_estimated: bool = True
    # the weakest latency source that counts: estimated (cost model) < emulated (LCE's aarch64
    # kernels under qemu-user) < measured (an arm64 board); allow_estimated: false = measured
    min_source: Literal["estimated", "emulated", "measured"] = "estimated"

    def required_source(self) -> str:
        return "measured" if not self.allow_estimated else self.min_source

    def source_counts(self, source: str) -> bool:
        """Whether a figure from ``source`` counts. At the default (``estimated``, the weakest)
        every source does, ``unavailable`` included: a gate that deferred (no runtime for the
        format) decides alone, as before ``min_source`` existed."""
        need = self.required_source()
        return need == "estimated" or SOURCE_RANK.get(source, -1) >= SOURCE_RANK[need]

    @field_validator("budget_ms")
    @classmethod
    def _known_devices(cls, v):
        if isinstance(v, str):
            return v
        from vlrface.latency.estimate import devices

        unknown = sorted(set(v) - set(devices()))
        if unknown or not v:
            raise ValueError(f"unknown device(s) {unknown}; known: {sorted(devices())}")
        if any(not (ms > 0) for ms in v.values()):
            raise ValueError("budgets must be > 0 ms")
        return v


class ParityRule(_Section):
    cosine_min: float = Field(ge=-1, le=1)


class Policy(_Section):
    metrics: list[MetricRule] = Field(default_factory=list)
    latency: LatencyRule = Field(default_factory=LatencyRule)
    parity: ParityRule | None = None
    gates: list[str] = Field(default_factory=lambda: list(GATES))
    # where the policy came from (a file, or the pipeline's registry.compare_metric)
    source: str = ""

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, v: list[MetricRule]) -> list[MetricRule]:
        names = [r.metric for r in v]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"metric(s) listed twice: {dupes}")
        return v

    @field_validator("gates")
    @classmethod
    def _known_gates(cls, v: list[str]) -> list[str]:
        if unknown := sorted(set(v) - set(GATES)):
            raise ValueError(f"unknown gate(s) {unknown}; known: {list(GATES)}")
        return list(dict.fromkeys(v))

    def as_dict(self) -> dict:
        return self.model_dump(mode="json")


def parse_policy(raw: object, source: str) -> Policy:
    """Validate a policy mapping; raise ``PolicyError`` naming ``source`` and the bad key."""
    if not isinstance(raw, dict) or not raw:
        raise PolicyError(f"{source}: a promotion policy must be a non-empty mapping")
    if "source" in raw:
        raise PolicyError(f"{source}: unknown key 'source'")
    try:
        return Policy.model_validate({**raw, "source": source})
    except ValidationError as exc:
        errors = exc.errors()
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            raise PolicyError(f"{source}: unknown key '{key}'") from None
        if err["type"] == "missing":
            raise PolicyError(f"{source}: missing required key '{key}'") from None
        msg = err["msg"].removeprefix("Value error, ")
        raise PolicyError(f"{source}: invalid value for '{key}': {msg}") from None


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file (YAML)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the promotion policy ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise PolicyError(f"{path}: not valid YAML{line}") from None
    return parse_policy(raw, str(path))


def fallback_policy(compare_metric: str, min_improvement: float = 0.0) -> Policy:
    """The policy of a pipeline config without ``registry.policy``: every gate, the pipeline's
    latency budgets, and ``registry.compare_metric`` higher by more than ``min_improvement``."""
    return parse_policy(
        {
            "metrics": [
                {
                    "metric": compare_metric,
                    "direction": "higher",
                    "min_improvement": min_improvement,
                }
            ],
            "latency": {"budget_ms": "pipeline"},
            "gates": list(GATES),
        },
        "registry.compare_metric",
    )


@dataclass
class Rule:
    """One check of a policy: its numbers and why it passed or failed."""

    rule: str  # gate.<name> | parity | latency.<device> | metric.<name> | files
    passed: bool
    reason: str
    challenger: float | str | None = None
    champion: float | str | None = None
    threshold: float | str | None = None


@dataclass
class Decision:
    promote: bool
    rules: list[Rule] = field(default_factory=list)
    name: str = ""
    version: int | None = None
    champion_version: int | None = None
    policy: str = ""

    @property
    def reasons(self) -> list[str]:
        return [r.reason for r in self.rules]

    @property
    def failed(self) -> list[Rule]:
        return [r for r in self.rules if not r.passed]

    def add(self, rule: Rule) -> None:
        self.rules.append(rule)
        self.promote = self.promote and rule.passed

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "promote": self.promote,
            "decision": "promoted" if self.promote else "refused",
            "champion_version": self.champion_version,
            "policy": self.policy,
            "reasons": self.reasons,
            "rules": [asdict(r) for r in self.rules],
        }


def fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def evaluate(policy: Policy, challenger: dict, champion: dict | None = None) -> Decision:
    """Evaluate ``challenger`` against ``champion`` (``None``: there is none) under ``policy``.

    Both are version records (``vlrface.registry.record_from_tags``): ``values`` (metric name ->
    float), ``gates`` (name -> bool), ``latency`` (device -> {ms, budget_ms, source}) and
    ``version``. Every rule is evaluated, so every failing reason is reported at once.
    """
    d = Decision(
        promote=True,
        version=challenger.get("version"),
        champion_version=champion.get("version") if champion else None,
        policy=policy.source,
    )
    gates = challenger.get("gates", {})
    for gate in policy.gates:
        state = gates.get(gate)
        if state is None:
            d.add(Rule(f"gate.{gate}", False, f"gate '{gate}' not recorded", None, None, "passed"))
        else:
            word = "passed" if state else "failed"
            d.add(Rule(f"gate.{gate}", state, f"gate '{gate}' {word}", word, None, "passed"))

    values = challenger.get("values", {})
    if policy.parity is not None:
        d.add(_parity_rule(policy.parity.cosine_min, challenger))

    for rule in _latency_rules(policy, challenger, gates):
        d.add(rule)

    champ_values = champion.get("values", {}) if champion else {}
    cv = d.champion_version
    for m in policy.metrics:
        got = values.get(m.metric)
        theirs = champ_values.get(m.metric)
        if got is None:
            d.add(Rule(f"metric.{m.metric}", False, f"challenger has no {m.metric}", None, theirs))
            continue
        if champion is None:
            d.add(
                Rule(
                    f"metric.{m.metric}",
                    True,
                    f"{m.metric} {fmt(got)}: no current champion to beat",
                    got,
                )
            )
            continue
        if theirs is None:
            d.add(
                Rule(
                    f"metric.{m.metric}",
                    True,
                    f"{m.metric} {fmt(got)}: champion v{cv} has no {m.metric}, not compared",
                    got,
                )
            )
            continue
        if m.direction == "higher":
            threshold = theirs + m.min_improvement
            ok, need = got > threshold, ">"
        else:
            threshold = theirs - m.min_improvement
            ok, need = got < threshold, "<"
        verb = "beats" if ok else "does not beat"
        d.add(
            Rule(
                f"metric.{m.metric}",
                ok,
                f"{m.metric} {fmt(got)} {verb} champion v{cv} {fmt(theirs)} "
                f"({m.direction} is better, min_improvement {fmt(m.min_improvement)}: "
                f"needs {need} {fmt(threshold)})",
                got,
                theirs,
                threshold,
            )
        )
    return d


def _parity_rule(floor: float, challenger: dict) -> Rule:
    """The export parity floor on the challenger's own format's parity metric
    (``challenger["format"]``, else the one format whose parity metric it records)."""
    values = challenger.get("values", {})
    form = FORMATS.get(challenger.get("format") or "") or format_of({}, values)
    if form is None:
        known = " or ".join(f.parity_metric for f in FORMATS.values())
        reason = f"no export parity metric recorded ({known})"
        return Rule("parity", False, reason, None, None, floor)
    metric = form.parity_metric
    got = values.get(metric)
    if got is None:
        return Rule("parity", False, f"no {metric} recorded", None, None, floor)
    ok = got >= floor
    reason = f"{metric} {fmt(got)} {'>=' if ok else '<'} floor {fmt(floor)}"
    return Rule("parity", ok, reason, got, None, floor)


def _latency_rules(policy: Policy, challenger: dict, gates: dict) -> list[Rule]:
    rules = []
    latency = challenger.get("latency", {})
    if policy.latency.budget_ms == "pipeline":
        budgets = {
            dev: r["budget_ms"] for dev, r in latency.items() if r.get("budget_ms") is not None
        }
        if not budgets:
            # a version without per-device budgets: the pipeline's latency gate decided
            state = gates.get("latency")
            ok = bool(state)
            word = {True: "passed", False: "failed", None: "not recorded"}[state]
            reason = f"latency: no per-device budgets recorded; the pipeline's gate {word}"
            source = challenger.get("latency_source") or "unknown"
            if ok and not policy.latency.source_counts(source):
                ok = False
                need = policy.latency.required_source()
                reason += f", but the policy needs {need} figures and these are {source}"
            return [Rule("latency", ok, reason, word, None, "passed")]
    else:
        budgets = dict(policy.latency.budget_ms)
    for dev, budget in sorted(budgets.items()):
        r = latency.get(dev) or {}
        ms, source = r.get("ms"), r.get("source", "unknown")
        if ms is None:
            rules.append(
                Rule(f"latency.{dev}", False, f"no latency figure for {dev}", None, None, budget)
            )
            continue
        ok = ms <= budget
        reason = f"latency {dev} {fmt(ms)} ms ({source}) {'<=' if ok else '>'} {fmt(budget)} ms"
        if ok and not policy.latency.source_counts(source):
            ok = False
            need = policy.latency.required_source()
            article = "an" if need[0] in "aeiou" else "a"
            reason += f", but the policy needs {article} {need} figure and this one is {source}"
        rules.append(Rule(f"latency.{dev}", ok, reason, ms, None, budget))
    return rules
