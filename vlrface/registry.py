"""The MLflow model registry: versions with provenance tags, gates, and the ``champion`` alias.

A registered version is created only after every file of it is stored, and deleted again if
anything after its creation fails, so a half-written version never stays. ``champion`` moves in
one call (``set_registered_model_alias``) and only when every rule of the promotion policy
(``vlrface.promotion``) passed; the decision, its reasons and numbers are tagged on the version
either way and appended to the model's history.

History: one registered-model tag per event, ``history.<nanoseconds>`` -> JSON (``event``:
``promote`` | ``refuse`` | ``rollback``, ``version``, ``previous`` and ``champion`` before and
after, ``reasons``, ``rules``, ``at``, ``by``). One tag write is atomic, and events are never
rewritten, so the history is append-only.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from vlrface import provenance
from vlrface.errors import VlrfaceError
from vlrface.promotion import Decision, Policy, Rule, evaluate

CHAMPION = "champion"
HISTORY = "history."
CARD = "model_card.md"
CONFIG_ARTIFACT = "registry/config.json"
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class RegistryError(VlrfaceError):
    """The registry is unreachable, or a model/version is unknown, or a file fails its sha256."""


def fail_fast() -> None:
    """Make MLflow's HTTP client give up at once on an unreachable server (default: ~2 min of
    retries) unless the user asked otherwise."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def client_for(uri: str) -> MlflowClient:
    fail_fast()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def errors(uri: str):
    """Turn MLflow's exceptions into one-line ``RegistryError``s."""
    try:
        yield
    except MlflowException as exc:
        first = (str(exc).strip().splitlines() or ["unknown error"])[0]
        if "API request to" in first and "failed" in first:
            cause = "connection refused" if "refused" in first.lower() else first[-160:]
            raise RegistryError(f"cannot reach the MLflow registry at {uri}: {cause}") from None
        raise RegistryError(f"MLflow registry at {uri}: {first[:300]}") from None


def _missing(exc: MlflowException) -> bool:
    return exc.error_code in NOT_FOUND


def champion(client: MlflowClient, name: str):
    """The version holding alias ``champion``, or ``None``."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise


def get_model(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"unknown registered model '{name}'") from None
        raise


def get_version(client: MlflowClient, name: str, version: int | str | None = None):
    """Version ``version`` of ``name`` (default: the latest)."""
    get_model(client, name)
    if version is None:
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise RegistryError(f"registered model '{name}' has no versions")
        return max(versions, key=lambda v: int(v.version))
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _missing(exc):
            raise RegistryError(f"registered model '{name}' has no version {version}") from None
        raise


def _float(x) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def record_from_tags(tags: dict[str, str], version: int | None = None) -> dict:
    """What a policy reads of a version: ``values`` (``metric.*`` tags, ``latency.<d>.ms``),
    ``gates``, per-device ``latency`` {ms, budget_ms, source}, ``files`` (sha256 tags)."""
    values: dict[str, float] = {}
    latency: dict[str, dict] = {}
    for k, v in tags.items():
        if k.startswith("metric.") and (x := _float(v)) is not None:
            values[k[len("metric.") :]] = x
        elif k.startswith("latency.") and k.count(".") >= 2:
            device, field_ = k[len("latency.") :].rsplit(".", 1)
            if field_ in ("ms", "budget_ms"):
                latency.setdefault(device, {})[field_] = _float(v)
            elif field_ == "source":
                latency.setdefault(device, {})["source"] = v
    for device, r in latency.items():
        r.setdefault("source", tags.get("latency.source", "unknown"))
        if r.get("ms") is not None:
            values.setdefault(f"latency.{device}.ms", r["ms"])
    return {
        "version": version,
        "values": values,
        "gates": {
            k[len("gate.") :]: v == "passed" for k, v in tags.items() if k.startswith("gate.")
        },
        "latency": {d: r for d, r in latency.items() if "ms" in r or "budget_ms" in r},
        "latency_source": tags.get("latency.source"),
        "files": {k[len("sha256.") :]: v for k, v in tags.items() if k.startswith("sha256.")},
    }


def version_record(mv) -> dict:
    return record_from_tags(dict(mv.tags), int(mv.version))


def verify_files(client: MlflowClient, mv) -> list[Rule]:
    """Download every file a version's ``sha256.<file>`` tags name and check its hash."""
    files = {k[len("sha256.") :]: v for k, v in mv.tags.items() if k.startswith("sha256.")}
    if not files:
        return [Rule("files", False, f"v{mv.version} records no sha256.<file> tags", None)]
    import mlflow.artifacts

    rules = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, expected) in enumerate(sorted(files.items())):
            try:
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{mv.source.rstrip('/')}/{name}",
                    dst_path=str(Path(tmp, str(i))),
                    tracking_uri=client._tracking_client.tracking_uri,
                )
            except (MlflowException, OSError) as exc:
                reason = f"file {name} of v{mv.version} cannot be read: {str(exc)[:120]}"
                rules.append(Rule(f"files.{name}", False, reason, None, None, expected))
                continue
            got = provenance.sha256_file(path)
            if got == expected:
                rules.append(Rule(f"files.{name}", True, f"{name} sha256 ok", got, None, expected))
            else:
                reason = (
                    f"sha256 mismatch: {name} of v{mv.version} is {got[:12]}..., "
                    f"its tag says {expected[:12]}..."
                )
                rules.append(Rule(f"files.{name}", False, reason, got, None, expected))
    return rules


def now() -> tuple[int, str]:
    ns = time.time_ns()
    return ns, datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def append_history(client: MlflowClient, name: str, event: dict) -> dict:
    """Append ``event`` to ``name``'s history (one registered-model tag); returns it with ``at``."""
    ns, at = now()
    existing = set(get_model(client, name).tags)
    while f"{HISTORY}{ns:020d}" in existing:
        ns += 1
    event = {"at": at, "model": name, **event}
    client.set_registered_model_tag(name, f"{HISTORY}{ns:020d}", json.dumps(event))
    return event


def history(client: MlflowClient, name: str | None = None) -> list[dict]:
    """Every promote/refuse/rollback event (of ``name``, or of every model), newest first."""
    models = [get_model(client, name)] if name else list(client.search_registered_models())
    events = []
    for m in models:
        for key, value in m.tags.items():
            if key.startswith(HISTORY):
                try:
                    event = json.loads(value)
                except json.JSONDecodeError:
                    continue
                events.append((key[len(HISTORY) :], {"model": m.name, **event}))
    return [e for _, e in sorted(events, key=lambda ke: ke[0], reverse=True)]


def record_decision(
    client: MlflowClient,
    name: str,
    version: int | str,
    d: Decision,
    policy: Policy | None = None,
    by: str = "pipeline",
) -> dict:
    """Tag the decision on the version, move ``champion`` (one alias call) if it promotes, and
    append the event to the history. If the history cannot be written after the alias moved,
    the alias is moved back, so the history never misses a promotion."""
    version = str(version)
    previous = champion(client, name)
    prev_v = int(previous.version) if previous else None
    _, at = now()
    tags = {
        "promotion.decision": "promoted" if d.promote else "refused",
        "promotion.reasons": json.dumps(d.reasons),
        "promotion.rules": json.dumps(d.as_dict()["rules"]),
        "promotion.at": at,
        "promotion.by": by,
        "promotion.champion_before": str(prev_v) if prev_v else "",
    }
    if policy is not None:
        tags["promotion.policy"] = json.dumps(policy.as_dict())
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    if d.promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    try:
        event = append_history(
            client,
            name,
            {
                "event": "promote" if d.promote else "refuse",
                "version": int(version),
                "previous": prev_v,
                "champion": int(version) if d.promote else prev_v,
                "by": by,
                "policy": d.policy,
                "reasons": d.reasons,
                "rules": d.as_dict()["rules"],
            },
        )
    except BaseException:
        if d.promote:
            if prev_v is None:
                client.delete_registered_model_alias(name, CHAMPION)
            else:
                client.set_registered_model_alias(name, CHAMPION, str(prev_v))
        raise
    return event


def policy_of(mv) -> Policy | None:
    """The policy recorded on a version when it was last decided, if any."""
    raw = mv.tags.get("promotion.policy")
    if not raw:
        return None
    try:
        return Policy.model_validate(json.loads(raw))
    except ValueError:
        return None


def promote(
    client: MlflowClient,
    name: str,
    policy: Policy,
    version: int | str | None = None,
    dry_run: bool = False,
    by: str = "cli",
) -> tuple[Decision, dict | None]:
    """Re-evaluate ``version`` (default: the latest) against the current champion under
    ``policy``, and check its files' sha256 before anything moves. Returns the decision and the
    history event (``None`` on a dry run, or when the version already is the champion)."""
    mv = get_version(client, name, version)
    current = champion(client, name)
    current_rec = version_record(current) if current else None
    if current is not None and str(current.version) == str(mv.version):
        d = Decision(
            promote=False,
            name=name,
            version=int(mv.version),
            champion_version=int(current.version),
            policy=policy.source,
        )
        d.add(Rule("champion", False, f"v{mv.version} already is the champion of '{name}'"))
        return d, None
    d = evaluate(policy, version_record(mv), current_rec)
    d.name = name
    for rule in verify_files(client, mv):
        d.add(rule)
    if dry_run:
        return d, None
    event = record_decision(client, name, mv.version, d, policy, by=by)
    _refresh_cards(
        client, name, [mv.version] + ([current.version] if d.promote and current else [])
    )
    return d, event


def champion_stack(events: list[dict]) -> list[int]:
    """Replay the history (newest first, as ``history`` returns it): the champions, oldest at
    the bottom; a promotion pushes, a rollback pops."""
    stack: list[int] = []
    for e in reversed(events):
        if e.get("event") == "promote":
            stack.append(int(e["version"]))
        elif e.get("event") == "rollback" and stack:
            stack.pop()
    return stack


def rollback(client: MlflowClient, name: str, dry_run: bool = False, by: str = "cli") -> dict:
    """Move ``champion`` back to the champion before the current one, as the history records
    it; the target's files are verified first. Raises ``RegistryError`` if there is none."""
    current = champion(client, name)
    if current is None:
        raise RegistryError(f"'{name}' has no champion to roll back")
    stack = champion_stack(history(client, name))
    cur = int(current.version)
    if not stack or stack[-1] != cur:
        raise RegistryError(
            f"champion v{cur} of '{name}' was not set by a recorded promotion "
            f"(the history's champion is {f'v{stack[-1]}' if stack else 'none'}); "
            "nothing rolled back"
        )
    if len(stack) < 2:
        raise RegistryError(
            f"no previous champion of '{name}' in its history (v{cur} is the first); "
            "nothing rolled back"
        )
    target = get_version(client, name, stack[-2])
    bad = [r for r in verify_files(client, target) if not r.passed]
    if bad:
        raise RegistryError(f"{bad[0].reason}; nothing rolled back")
    event = {
        "event": "rollback",
        "version": int(target.version),
        "previous": cur,
        "champion": int(target.version),
        "by": by,
        "reasons": [f"rollback from v{cur} to the previous champion v{target.version}"],
    }
    if dry_run:
        return {"model": name, "dry_run": True, **event}
    client.set_registered_model_alias(name, CHAMPION, str(target.version))
    try:
        event = append_history(client, name, event)
    except BaseException:
        client.set_registered_model_alias(name, CHAMPION, str(cur))
        raise
    _, at = now()
    for k, v in {
        "promotion.decision": "promoted",
        "promotion.reasons": json.dumps(event["reasons"]),
        "promotion.at": at,
        "promotion.by": f"{by} (rollback)",
    }.items():
        client.set_model_version_tag(name, str(target.version), k, v)
    client.set_model_version_tag(name, str(cur), "promotion.decision", "rolled back")
    _refresh_cards(client, name, [target.version, cur])
    return event


STAGE_NAMES = {"pretrain": "pretrained", "finetune": "finetuned"}


def stage_model_name(name: str, stage: str) -> str:
    """The registered model that holds ``name``'s backbones after ``stage``:
    ``binaryfacenet-pretrained``, ``binaryfacenet-finetuned``."""
    return f"{name}-{STAGE_NAMES.get(stage, stage)}"


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


def card_inputs(client: MlflowClient, mv) -> dict:
    """Everything the model card shows of a version: its tags, its run's metrics and params, the
    pipeline configuration logged with it, whether it is champion."""
    metrics, params, config = {}, {}, None
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            metrics, params = dict(run.data.metrics), dict(run.data.params)
        except MlflowException:
            pass
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(mv.run_id, CONFIG_ARTIFACT, tmp)
                config = json.loads(Path(path).read_text())
        except (MlflowException, OSError, ValueError):
            config = None
    model = client.get_registered_model(mv.name)
    aliases = sorted(a for a, v in model.aliases.items() if str(v) == str(mv.version))
    return {
        "name": mv.name,
        "version": int(mv.version),
        "aliases": aliases,
        "tags": dict(mv.tags),
        "run_id": mv.run_id,
        "run_metrics": metrics,
        "run_params": params,
        "config": config,
        "created": mv.creation_timestamp,
        "description": mv.description,
    }


def refresh_card(client: MlflowClient, name: str, version: int | str) -> str | None:
    """Re-render the version's model card and replace ``model_card.md`` in its run (after a
    later decision); returns the card, or ``None`` if the version has no run."""
    from vlrface.reports.model_card import render

    mv = client.get_model_version(name, str(version))
    if not mv.run_id:
        return None
    card = render(card_inputs(client, mv))
    client.log_text(mv.run_id, card, CARD)
    return card


def _refresh_cards(client: MlflowClient, name: str, versions: list) -> None:
    """Best effort: the decision is already recorded; a stale card must not undo it."""
    for v in versions:
        try:
            refresh_card(client, name, v)
        except (MlflowException, OSError):
            continue


def list_versions(client: MlflowClient, name: str | None = None) -> list[dict]:
    """Every version (of ``name``, or of every registered model), newest first."""
    models = [name] if name else [m.name for m in client.search_registered_models()]
    out = []
    for model in models:
        # search results leave `aliases` empty: take them from the registered model
        aliases: dict[str, list[str]] = {}
        for alias, version in get_model(client, model).aliases.items():
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
                    "latency": {
                        k[len("latency.") : -len(".ms")]: float(x)
                        for k, x in tags.items()
                        if k.startswith("latency.")
                        and k.endswith(".ms")
                        and not k.endswith(".budget_ms")
                    },
                    "latency_source": tags.get("latency.source"),
                    "decision": tags.get("promotion.decision"),
                    "created": v.creation_timestamp,
                }
            )
    return sorted(out, key=lambda r: (r["name"], -r["version"]))
