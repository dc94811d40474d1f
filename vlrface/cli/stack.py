"""``vlrface stack`` and ``vlrface infra``: the ZenML stacks and their run configurations."""

from __future__ import annotations

import click


@click.group()
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
@click.option(
    "--team",
    is_flag=True,
    help="The team stack (infra/stacks/local.yaml): S3 artifacts, a remote MLflow server.",
)
@click.option("--tracking-uri", help="--team: the MLflow server, e.g. http://127.0.0.1:5080.")
@click.option("--s3-endpoint", help="--team: S3 endpoint URL (omit for AWS S3).")
@click.option("--bucket", default="vlrface-zenml", show_default=True, help="--team: artifacts.")
def stack_setup(mlflow_dir, team, tracking_uri, s3_endpoint, bucket) -> None:
    """Register and activate the local stack (MLflow tracker + registry), or with --team the
    team stack; idempotent."""
    if team:
        from vlrface.stack import ensure_team_stack

        if not tracking_uri:
            raise click.UsageError("--team needs --tracking-uri")
        name = ensure_team_stack(tracking_uri, s3_endpoint, bucket)
        click.echo(f"active ZenML stack: {name} (MLflow at {tracking_uri}, s3://{bucket})")
        return
    from vlrface.stack import ensure_local_stack

    name = ensure_local_stack(mlflow_dir, ["train_binaryfacenet"])
    click.echo(f"active ZenML stack: {name} (MLflow at {mlflow_dir}/)")


@click.group()
def infra() -> None:
    """Run configurations for the stacks of infra/."""


@infra.command("config")
@click.argument("profile", type=click.Path(exists=True, dir_okay=False))
@click.option("--stack", "stack_name", required=True, help="local, kubernetes or kubeflow.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False))
@click.option("--image", default=None, help="A prebuilt image every step runs (skip_build).")
def infra_config(profile, stack_name, out, image) -> None:
    """PROFILE plus the stack's Docker settings and per-step resources, as one
    `zenml pipeline run -c` file."""
    from pathlib import Path

    import yaml

    from vlrface.infra import run_config

    cfg = run_config(profile, stack_name, image=image)
    Path(out).write_text(yaml.safe_dump(cfg, sort_keys=False))
    click.echo(f"{out}: {profile} on the {stack_name} stack ({len(cfg['steps'])} steps configured)")


COMMANDS = [stack, infra]
