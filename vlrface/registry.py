"""The MLflow model registry: versions with provenance tags, gates, and the ``champion`` alias.

A registered version is created only after every file of it is stored, and deleted again if
anything after its creation fails, so a half-written version never stays. ``champion`` moves in
one call (``set_registered_model_alias``) and only when every gate passed and the challenger beats
the current champion; the decision and its reasons are tagged on the version either way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    compare_metric: str = ""
    challenger_value: float | None = None
    champion_version: str | None = None
    champion_value: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def champion(client: MlflowClient, name: str):
    """The version holding alias ``champion``, or ``None``."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def version_metrics(client: MlflowClient, version) -> dict[str, float]:
    """The metrics of the run a version was registered from."""
    if not version.run_id:
        return {}
    return dict(client.get_run(version.run_id).data.metrics)


def decide(
    client: MlflowClient,
    name: str,
    metrics: dict[str, float],
    gates: dict[str, bool],
    compare_metric: str,
    min_improvement: float = 0.0,
) -> Decision:
    """Promote only if every gate passed and ``compare_metric`` beats the champion's."""
    d = Decision(promote=True, compare_metric=compare_metric)
    for gate, passed in sorted(gates.items()):
        if not passed:
            d.promote = False
            d.reasons.append(f"gate '{gate}' failed")
    if compare_metric not in metrics:
        raise KeyError(f"compare_metric {compare_metric!r} is not among the run's metrics")
    d.challenger_value = float(metrics[compare_metric])
    current = champion(client, name)
    if current is None:
        d.reasons.append("no current champion")
        return d
    d.champion_version = str(current.version)
    champ = version_metrics(client, current).get(compare_metric)
    if champ is None:
        d.reasons.append(f"champion v{current.version} has no {compare_metric}")
        return d
    d.champion_value = float(champ)
    if d.challenger_value > d.champion_value + min_improvement:
        d.reasons.append(
            f"{compare_metric} {d.challenger_value:.4f} beats champion v{current.version} "
            f"{d.champion_value:.4f} by more than {min_improvement}"
        )
    else:
        d.promote = False
        d.reasons.append(
            f"{compare_metric} {d.challenger_value:.4f} does not beat champion "
            f"v{current.version} {d.champion_value:.4f} by more than {min_improvement}"
        )
    return d


def register(
    client: MlflowClient,
    name: str,
    source: str,
    run_id: str,
    tags: dict[str, str],
    description: str = "",
):
    """Create a model version of ``name`` from ``source`` with ``tags``."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="vlrface face descriptor")
    return client.create_model_version(
        name,
        source=source,
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        description=description,
    )


def record_decision(client: MlflowClient, name: str, version: str, d: Decision) -> None:
    client.set_model_version_tag(
        name, version, "promotion.decision", "promoted" if d.promote else "refused"
    )
    client.set_model_version_tag(name, version, "promotion.reasons", json.dumps(d.reasons))
    if d.promote:
        client.set_registered_model_alias(name, CHAMPION, version)


def list_versions(client: MlflowClient, name: str | None = None) -> list[dict]:
    """Every version (of ``name``, or of every registered model), newest first."""
    models = [name] if name else [m.name for m in client.search_registered_models()]
    out = []
    for model in models:
        # search results leave `aliases` empty: take them from the registered model
        aliases: dict[str, list[str]] = {}
        for alias, version in client.get_registered_model(model).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        for v in client.search_model_versions(f"name='{model}'"):
            tags = dict(v.tags)
            out.append(
                {
                    "name": v.name,
                    "version": int(v.version),
                    "aliases": sorted(aliases.get(str(v.version), [])),
                    "metrics": {
                        k[len("metric.") :]: float(x)
                        for k, x in tags.items()
                        if k.startswith("metric.")
                    },
                    "gates": {
                        k[len("gate.") :]: x == "passed"
                        for k, x in tags.items()
                        if k.startswith("gate.")
                    },
                    "decision": tags.get("promotion.decision"),
                    "created": v.creation_timestamp,
                }
            )
    return sorted(out, key=lambda r: (r["name"], -r["version"]))
