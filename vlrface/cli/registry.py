"""``vlrface models list|history|card``, ``vlrface promote`` and ``vlrface report``: the MLflow
model registry, its promotion policy and the side-by-side report of registered versions."""

from __future__ import annotations

import json
import sys

import click

from vlrface.cli._common import registry_client, tracking_uri_option
from vlrface.cli._output import table


@click.group()
def models() -> None:
    """The MLflow model registry."""


def _key_metrics(rows: list[dict]) -> list[str]:
    """The accuracy metrics any listed version records: the list's metric columns."""
    return sorted({k for r in rows for k in r["metrics"] if k.endswith(".acc")})


def _listing(tracking_uri, fetch, name, as_json: bool, none: str) -> list | None:
    """``fetch(client, name)``'s rows from the registry; printed as JSON, or the line ``none`` when
    there are none, and then None: the command has nothing more to print."""
    from vlrface import registry

    client, uri = registry_client(tracking_uri)
    with registry.errors(uri):
        rows = fetch(client, name)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return None
    if not rows:
        click.echo(none)
        return None
    return rows


@models.command("list")
@click.option("--name", help="Only this registered model.")
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of versions.")
def models_list(name, tracking_uri, as_json) -> None:
    """Registered versions with aliases, key metrics and gate results."""
    from vlrface import registry

    rows = _listing(tracking_uri, registry.list_versions, name, as_json, "no registered models")
    if rows is None:
        return
    metrics = _key_metrics(rows)
    header = ["model", "version", "aliases", "decision", "gates"]
    header += [m.removeprefix("eval.") for m in metrics]
    body = [
        [
            r["name"],
            r["version"],
            ",".join(r["aliases"]) or "-",
            r["decision"] or "-",
            " ".join(f"{k}:{'ok' if v else 'FAIL'}" for k, v in sorted(r["gates"].items())) or "-",
            *(r["metrics"].get(m) for m in metrics),
        ]
        for r in rows
    ]
    click.echo("\n".join(table(header, body)))


@models.command("history")
@click.option("--name", help="Only this registered model.")
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of events.")
def models_history(name, tracking_uri, as_json) -> None:
    """Every promote / refuse / rollback event, newest first."""
    from vlrface import registry

    events = _listing(tracking_uri, registry.history, name, as_json, "no promotion history")
    if events is None:
        return
    for e in events:
        prev = f"v{e['previous']}" if e.get("previous") else "none"
        now = f"v{e['champion']}" if e.get("champion") else "none"
        rules = e.get("rules", [])
        failed = [r["reason"] for r in rules if not r.get("passed")]
        compared = [r["reason"] for r in rules if r["rule"].startswith("metric.")]
        why = "; ".join(failed or compared or e.get("reasons", [])[:1])
        click.echo(
            f"{e['at']} {e['model']} {e['event']:<8} v{e['version']} "
            f"champion {prev} -> {now} by {e.get('by', '-')}: {why}"
        )


@models.command("card")
@click.option("--name", required=True, help="Registered model.")
@click.option("--version", required=True, type=click.IntRange(1))
@tracking_uri_option
def models_card(name, version, tracking_uri) -> None:
    """Print a version's Markdown model card (rendered from the registry as it is now)."""
    from vlrface import registry
    from vlrface.reports.model_card import render

    client, uri = registry_client(tracking_uri)
    with registry.errors(uri):
        mv = registry.get_version(client, name, version)
        card = render(registry.card_inputs(client, mv))
    click.echo(card, nl=False)


@click.command("promote")
@click.option("--model", "name", required=True, help="Registered model name.")
@click.option("--version", type=click.IntRange(1), help="Version to evaluate (default: latest).")
@click.option("--rollback", is_flag=True, help="Move champion back to the previous champion.")
@click.option("--dry-run", is_flag=True, help="Print the decision; change nothing.")
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False),
    help="Promotion policy (default: mlflow/promotion.yaml if present, else the policy the "
    "version was last decided under).",
)
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def promote_cmd(name, version, rollback, dry_run, policy_path, tracking_uri, as_json) -> None:
    """Promote a version to `champion` if it passes the policy against the current champion.

    Exit status: 0 promoted (or would be, with --dry-run), 3 refused, 1 on an error.
    """
    from vlrface import registry

    if rollback and (version or policy_path):
        raise click.UsageError("--rollback takes neither --version nor --policy")
    client, uri = registry_client(tracking_uri)
    with registry.errors(uri):
        if rollback:
            event = registry.rollback(client, name, dry_run=dry_run)
            if as_json:
                click.echo(json.dumps({**event, "dry_run": dry_run}, indent=2))
            else:
                verb = "would roll back" if dry_run else "rolled back"
                click.echo(f"{name}: {verb} champion v{event['previous']} -> v{event['version']}")
            return
        policy = registry.policy_for(client, name, version, policy_path)
        decision, event = registry.promote(client, name, policy, version, dry_run=dry_run)
    already = any(r.rule == "champion" for r in decision.rules)
    bad_files = [r for r in decision.failed if r.rule.startswith("files")]
    if as_json:
        payload = {**decision.as_dict(), "dry_run": dry_run, "recorded": event is not None}
        click.echo(json.dumps(payload, indent=2))
    else:
        head = "PROMOTED" if decision.promote else "REFUSED"
        if dry_run:
            head = f"would be {head.lower()} (dry run: nothing changed)"
        champ = f"v{decision.champion_version}" if decision.champion_version else "no champion"
        click.echo(f"{name} v{decision.version} vs {champ} under {decision.policy}: {head}")
        for r in decision.rules:
            click.echo(f"  {'pass' if r.passed else 'FAIL'}  {r.rule}: {r.reason}")
    if bad_files:
        raise registry.RegistryError(f"{bad_files[0].reason}; nothing promoted")
    if not decision.promote and not already:
        sys.exit(3)


@click.command("report")
@click.option(
    "--model",
    "specs",
    required=True,
    multiple=True,
    help="A registered model as <name>@<alias>, <name>@<version> or models:/<name>@<alias> "
    "(or /<version>); repeat to compare several.",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Markdown report to write."
)
@click.option("--html", is_flag=True, help="Also write the report as HTML (<out> with .html).")
@click.option("--digits", default=4, show_default=True, type=click.IntRange(1, 8))
@tracking_uri_option
def report_cmd(specs, out, html, digits, tracking_uri) -> None:
    """Registered models side by side: their evaluation metrics in the papers' table layouts."""
    from pathlib import Path

    from vlrface import registry
    from vlrface.fileio import write_atomic
    from vlrface.references import ModelRefError, parse
    from vlrface.reports.compare import render_report, version_metrics

    try:
        refs = [parse(s, registered_only=True) for s in specs]
    except ModelRefError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    client, uri = registry_client(tracking_uri)
    results, models_ = {}, []
    with registry.errors(uri):
        for spec, ref in zip(specs, refs, strict=True):
            try:
                mv = registry.resolve_version(client, ref.name, ref.alias, ref.version)
            except registry.RegistryError as exc:
                raise registry.RegistryError(f"--model {spec}: {exc}") from None
            aliases = registry.aliases_of(client, ref.name, mv.version)
            label = f"{ref.name} v{mv.version}" + (f" ({', '.join(aliases)})" if aliases else "")
            if label in results:
                raise click.UsageError(f"--model {spec}: {label} is already in the report")
            results[label] = version_metrics(client, mv)
            tags = dict(mv.tags)
            models_.append(
                {
                    "label": label,
                    "name": ref.name,
                    "version": int(mv.version),
                    "aliases": aliases,
                    "run_id": mv.run_id,
                    "dataset": tags.get("data.dataset"),
                    "synthetic": tags.get("data.synthetic"),
                }
            )
    empty = [label for label, m in results.items() if not m]
    if len(empty) == len(results):
        raise click.ClickException(f"no eval.* metrics recorded for {', '.join(empty)}")
    write_atomic(out, render_report(results, models_, digits=digits).encode())
    written = [out]
    if html:
        page = Path(out).with_suffix(".html")
        write_atomic(page, render_report(results, models_, html=True, digits=digits).encode())
        written.append(str(page))
    click.echo(f"compared {len(results)} model(s) in {', '.join(written)}")
    for label in empty:
        click.echo(f"warning: {label} has no eval.* metrics", err=True)


COMMANDS = [models, promote_cmd, report_cmd]
