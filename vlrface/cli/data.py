"""``vlrface data``: the synthetic demo set, manifests and alignment of the real releases."""

from __future__ import annotations

import click

from vlrface.cli._common import emit


@click.group()
def data() -> None:
    """Datasets: the synthetic demo set, manifests of the real releases."""


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

        from vlrface.config.common import SyntheticData

        section = (
            (yaml.safe_load(open(config_path)) or {}).get("parameters", {}).get("synthetic", {})
        )
        s = SyntheticData(**section)
        identities, images_per_identity, seed = s.identities, s.images_per_identity, s.seed
    write_casia_layout(out, identities, images_per_identity, seed)
    click.echo(f"wrote {identities} x {images_per_identity} synthetic faces to {out}")


def _dataset_options(f):
    """``--dataset`` and one ``--<option> FILE`` per protocol file a registered reader takes."""
    from vlrface.data.datasets import DATASETS

    options: dict[str, dict[str, list[str]]] = {}  # option -> help -> datasets
    for d in DATASETS.values():
        for p in d.protocol:
            options.setdefault(p.option, {}).setdefault(p.help, []).append(d.name)
    for name in sorted(options, reverse=True):
        helps = "; ".join(f"{h} ({', '.join(users)})" for h, users in options[name].items())
        f = click.option(
            f"--{name}", name.replace("-", "_"), type=click.Path(dir_okay=False), help=helps
        )(f)
    names = ", ".join(DATASETS)
    return click.option("--dataset", required=True, help=f"One of: {names}.")(f)


def _protocol_files(dataset: str, protocol: dict) -> dict:
    """The protocol files given, refusing those the dataset's reader does not take."""
    from vlrface.data import datasets

    spec = datasets.get(dataset)
    given = {k: v for k, v in protocol.items() if v is not None}
    if wrong := sorted(set(given) - {p.kwarg for p in spec.protocol}):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in wrong)
        raise click.UsageError(f"{flags} do(es) not apply to dataset {dataset}")
    return given


_on_error_option = click.option(
    "--on-error",
    type=click.Choice(["raise", "skip"]),
    default="raise",
    show_default=True,
    help="A bad record stops the read, or is skipped and counted in the provenance.",
)


@data.command("manifest")
@_dataset_options
@click.option("--root", required=True, type=click.Path(), help="The dataset's release folder.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Parquet to write.")
@_on_error_option
@click.option("--json", "as_json", is_flag=True, help="Print the provenance as JSON.")
def data_manifest(dataset, root, out, on_error, as_json, **protocol) -> None:
    """Read a dataset in its release layout into a Parquet manifest with its provenance."""
    from vlrface.data.manifest import build_manifest, write_manifest

    given = _protocol_files(dataset, protocol)
    df = build_manifest(dataset, root, on_error=on_error, protocol=given)
    write_manifest(df, out)
    emit({**df.attrs["provenance"], "out": out}, as_json)


@data.command("align")
@_dataset_options
@click.option("--root", required=True, type=click.Path(), help="The dataset's release folder.")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write: aligned faces at their release paths, manifest.parquet, "
    "alignment.json, no_face.txt.",
)
@click.option(
    "--align",
    "mode",
    type=click.Choice(["auto", "landmarks", "detector"]),
    default="auto",
    show_default=True,
    help="The release's landmarks where it has them, else the face detector (auto).",
)
@click.option("--image-size", default=112, show_default=True, type=click.IntRange(16))
@click.option(
    "--workers",
    type=click.IntRange(1),
    help="Processes (default: every core).",
)
@_on_error_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def data_align(dataset, root, out, mode, image_size, workers, on_error, as_json, **protocol):
    """Align a raw release to the ArcFace 112x112 template: an aligned tree in the release's
    layout, with how many faces each source gave and the photos without one."""
    from pathlib import Path

    from vlrface.data import alignment
    from vlrface.data.manifest import build_manifest

    given = _protocol_files(dataset, protocol)
    if (Path(out) / alignment.REPORT).is_file():
        raise click.ClickException(f"{out}: already holds an alignment; remove it to redo it")
    df = build_manifest(dataset, root, on_error=on_error, protocol=given)
    if alignment.plan(df, dataset, mode, image_size, root) == "none":
        raise click.ClickException(
            f"{root}: the {dataset} release is aligned already ({image_size}x{image_size} "
            "faces or an insightface pack): nothing to align"
        )
    _, report = alignment.align_manifest(
        df, root, out, mode=mode, layout=dataset, image_size=image_size, workers=workers
    )
    if as_json:
        emit({**report, "out": out}, True)
        return
    click.echo(f"aligned {report['written']} of {report['images']} faces into {out} "
               f"({report['images_per_second']} img/s, {report['workers']} workers)")  # fmt: skip
    for source, c in report["per_source"].items():
        click.echo(
            f"{source}: {c['landmarks']} by landmarks, {c['detector']} by detector, "
            f"{c['no_face']} without a face"
        )
    if report["no_face"]:
        click.echo(f"no face found (left out, listed in {Path(out) / alignment.NO_FACE}):")
        for path in report["no_face"][:20]:
            click.echo(f"  {path}")


COMMANDS = [data]
