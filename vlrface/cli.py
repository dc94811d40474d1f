"""The ``vlrface`` command line: the same functions the pipelines use, for people."""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import click  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vlrface")
def main() -> None:
    """vlrface: very-low-resolution face recognition, from data to a promoted ARM model."""


@main.group()
def data() -> None:
    """Datasets: the synthetic demo set."""


@data.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Dataset root.")
@click.option("--identities", default=150, show_default=True, type=click.IntRange(2))
@click.option(
    "--images",
    "images_per_identity",
    default=10,
    show_default=True,
    type=click.IntRange(2),
    help="Images per identity.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Take identities/images/seed from a pipeline config's `synthetic` section.",
)
def data_synth(out, identities, images_per_identity, seed, config_path) -> None:
    """Render the deterministic synthetic face set in CASIA-WebFace's layout."""
    from vlrface.data.synthetic import write_casia_layout

    if config_path:
        import yaml

        from vlrface.config import SyntheticData

        section = (
            (yaml.safe_load(open(config_path)) or {}).get("parameters", {}).get("synthetic", {})
        )
        s = SyntheticData(**section)
        identities, images_per_identity, seed = s.identities, s.images_per_identity, s.seed
    write_casia_layout(out, identities, images_per_identity, seed)
    click.echo(f"wrote {identities} x {images_per_identity} synthetic faces to {out}")


@main.group()
def stack() -> None:
    """The ZenML stack."""


@stack.command("setup")
@click.option(
    "--mlflow-dir",
    default="mlflow",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Holds mlflow.db and artifacts/.",
)
def stack_setup(mlflow_dir) -> None:
    """Register and activate the local stack (MLflow tracker + registry); idempotent."""
    from vlrface.stack import ensure_local_stack

    name = ensure_local_stack(mlflow_dir, ["train_binaryfacenet"])
    click.echo(f"active ZenML stack: {name} (MLflow at {mlflow_dir}/)")


@main.group()
def models() -> None:
    """The MLflow model registry."""


@models.command("list")
@click.option("--name", help="Only this registered model.")
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking URI (default: the active ZenML stack's tracker).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of versions.")
def models_list(name, tracking_uri, as_json) -> None:
    """Registered versions with aliases, key metrics and gate results."""
    from mlflow import MlflowClient

    from vlrface.registry import list_versions
    from vlrface.stack import active_tracking_uri

    rows = list_versions(MlflowClient(tracking_uri or active_tracking_uri()), name)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no registered models")
        return
    for r in rows:
        gates = " ".join(f"{k}:{'ok' if v else 'FAIL'}" for k, v in sorted(r["gates"].items()))
        key = {k: round(v, 4) for k, v in r["metrics"].items() if k.endswith(".acc")}
        click.echo(
            f"{r['name']} v{r['version']} aliases={','.join(r['aliases']) or '-'} "
            f"decision={r['decision']} gates[{gates}] {key}"
        )


def run() -> None:
    """Console entry point (``VlrfaceError``s print as one ``Error:`` line, exit code 1)."""
    try:
        main(standalone_mode=True)
    except RuntimeError as exc:  # e.g. no MLflow tracker on the active stack
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
