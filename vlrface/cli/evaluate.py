"""``vlrface evaluate``: a model on a benchmark protocol, metrics named as MLflow logs them."""

from __future__ import annotations

import click

from vlrface.cli._common import emit, model_ref


def _eval_file_options(f):
    """The ``--<file>`` options of every protocol file (``vlrface.protocols.runners.TABLE``)."""
    from vlrface.protocols.runners import file_options

    for keyword, helps in reversed(file_options().items()):
        f = click.option(f"--{keyword.replace('_', '-')}", keyword, help=helps)(f)
    return f


def _option_of(key: str) -> str:
    """The option that sets an evaluation entry's ``key`` (``suite.entry_kwargs``'s labels)."""
    option = {"name": "protocol", "root": "data"}.get(key, key.removeprefix("files."))
    return f"--{option.replace('_', '-')}"


@click.command("evaluate")
@click.option(
    "--protocol",
    required=True,
    help="lfw, scface, tinyface, survface, ijbb, ijbc, vggface2_pose or identities.",
)
@click.option("--data", "root", required=True, help="The dataset's release folder.")
@click.option(
    "--model",
    "spec",
    required=True,
    help="A .keras/.h5/.tflite/.onnx file, a zoo name, models:/<name>@<alias> or "
    "models:/<name>/<version>.",
)
@_eval_file_options
@click.option("--resolutions", help="Probe sizes in px, e.g. 7,14,28 (default: the protocol's).")
@click.option(
    "--up",
    default="area",
    show_default=True,
    type=click.Choice(["area", "bicubic", "bilinear", "nearest", "bicubic_aa", "bilinear_aa"]),
    help="Up-sampling back to the input size.",
)
@click.option("--no-flip", is_flag=True, help="Embed without the flip test-time augmentation.")
@click.option(
    "--align",
    type=click.Choice(["auto", "landmarks", "detector", "none"]),
    default="auto",
    show_default=True,
    help="Raw releases: the release's landmarks where it has them, else the face detector "
    "(auto); none crops and resizes.",
)
@click.option(
    "--plots",
    type=click.Path(file_okay=False),
    help="Write the protocol's ROC/DET/CMC/heatmap figures (PNG) into this folder.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate_cmd(
    protocol, root, spec, resolutions, up, no_flip, align, plots, as_json, **files
) -> None:
    """Evaluate a model on a benchmark protocol; metrics named as MLflow logs them."""
    from pathlib import Path

    from vlrface.data.records import DataError
    from vlrface.protocols.common import alignment_line, parse_resolutions
    from vlrface.protocols.runners import PROTOCOLS
    from vlrface.protocols.suite import entry_kwargs
    from vlrface.references import embedder as embedder_of

    entry = {"name": protocol, "root": root, "align": align}
    if resolutions is not None:
        try:
            entry["resolutions"] = parse_resolutions(resolutions)
        except ValueError as exc:
            raise click.ClickException(f"--resolutions {resolutions!r}: {exc}") from None
    # a file named on the command line is where it says, not under the data root
    entry["files"] = {k: str(Path(v).absolute()) for k, v in files.items() if v is not None}
    try:  # the configuration's checks, errors naming the options
        kwargs = entry_kwargs(entry, flip=not no_flip, up=up, label=_option_of)
    except (DataError, KeyError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    embedder = embedder_of(model_ref(spec))
    try:
        metrics, artifacts = PROTOCOLS[protocol](embedder, root, progress=True, **kwargs)
    except (DataError, ValueError, KeyError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0].strip("'\"")
        raise click.ClickException(f"{protocol}: {first}") from None
    metrics = {k: float(v) for k, v in metrics.items()}
    if plots:
        from vlrface.reports.plots import protocol_figures

        for name, fig in protocol_figures(protocol, artifacts, Path(spec).name).items():
            out = Path(plots) / Path(name).name
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out, dpi=120)
    aligned = artifacts.get("alignment")
    if not as_json:
        how = alignment_line(aligned) if aligned else "none (native low-resolution faces)"
        emit({"protocol": protocol, "model": spec, "alignment": how, **metrics}, False)
        return
    payload = {"protocol": protocol, "data": str(root), "model": spec, "metrics": metrics}
    payload["alignment"] = aligned or {"align": "none"}
    if "cross_resolution" in artifacts:
        cross = artifacts["cross_resolution"]
        payload["cross_resolution"] = {
            k: [[None if v != v else float(v) for v in row] for row in m]
            if k != "resolutions"
            else m
            for k, m in cross.items()
        }
    emit(payload, True)


COMMANDS = [evaluate_cmd]
