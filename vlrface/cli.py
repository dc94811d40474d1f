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

        from vlrface.config import SyntheticData

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


@data.command("manifest")
@_dataset_options
@click.option("--root", required=True, type=click.Path(), help="The dataset's release folder.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Parquet to write.")
@click.option(
    "--on-error",
    type=click.Choice(["raise", "skip"]),
    default="raise",
    show_default=True,
    help="A bad record stops the read, or is skipped and counted in the provenance.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the provenance as JSON.")
def data_manifest(dataset, root, out, on_error, as_json, **protocol) -> None:
    """Read a dataset in its release layout into a Parquet manifest with its provenance."""
    from vlrface.data import datasets
    from vlrface.data.manifest import build_manifest, write_manifest

    spec = datasets.get(dataset)
    given = {k: v for k, v in protocol.items() if v is not None}
    if wrong := sorted(set(given) - {p.kwarg for p in spec.protocol}):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in wrong)
        raise click.UsageError(f"{flags} do(es) not apply to dataset {dataset}")
    df = build_manifest(dataset, root, on_error=on_error, protocol=given)
    write_manifest(df, out)
    _emit({**df.attrs["provenance"], "out": out}, as_json)


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


def _emit(payload: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    else:
        for key, value in payload.items():
            click.echo(f"{key}: {value}")


def _face_batch(faces_dir: str | None, count: int):
    """Normalised 112x112 faces: images under ``faces_dir``, else rendered synthetic faces."""
    import numpy as np

    from vlrface.preprocess import load_rgb, normalize

    if faces_dir:
        from pathlib import Path

        paths = sorted(
            p for p in Path(faces_dir).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
        )[:count]
        if not paths:
            raise click.ClickException(f"{faces_dir}: no .jpg/.png face images found")
        return normalize(np.stack([load_rgb(p, 112) for p in paths])), faces_dir
    from vlrface.data.synthetic import render_face

    return normalize(np.stack([render_face(0, i, 0) for i in range(count)])), "synthetic faces"


@main.command("efficiency")
@click.argument("model_name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def efficiency_cmd(model_name, as_json) -> None:
    """Binary/float MACs, parameters and size of a zoo model's backbone (larq summary)."""
    from vlrface.models import build_named
    from vlrface.models.efficiency import efficiency

    try:
        model = build_named(model_name, output_head=False)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="MODEL_NAME") from None
    _emit(efficiency(model), as_json)


@main.command("import-checkpoint")
@click.argument("h5", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="Save the imported model (.keras).")
@click.option(
    "--faces",
    "faces_dir",
    type=click.Path(file_okay=False, exists=True),
    help="Folder of aligned 112x112 face crops to verify on (default: synthetic).",
)
@click.option("--count", default=16, show_default=True, type=click.IntRange(1))
@click.option("--tolerance", default=1e-4, show_default=True, type=float)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def import_checkpoint_cmd(h5, out, faces_dir, count, tolerance, as_json) -> None:
    """Load the BinaryFaceNet authors' .h5 into our definition and verify the embeddings."""
    from vlrface.models.checkpoint import import_checkpoint

    faces, source = _face_batch(faces_dir, count)
    model, report = import_checkpoint(h5, faces, tolerance)
    payload = {**report.as_dict(), "faces_source": source}
    if out:
        import tempfile
        from pathlib import Path

        from vlrface.materializers import save_keras

        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            save_keras(model, str(Path(tmp) / "model.keras"))
            Path(tmp, "model.keras").replace(target)
        payload["out"] = str(target)
    _emit(payload, as_json)


def _load_model(spec: str):
    """A saved model (.keras / .h5) or a freshly initialised zoo model by name."""
    from pathlib import Path

    from vlrface.models import ZOO, build_named

    if spec in ZOO:
        return build_named(spec)
    path = Path(spec)
    if path.suffix == ".h5":
        from vlrface.models.checkpoint import load_h5

        return load_h5(path)
    if path.suffix == ".keras" and path.is_file():
        from vlrface.materializers import load_keras

        return load_keras(str(path))
    raise click.BadParameter(
        f"{spec}: neither a .keras/.h5 file nor a zoo model ({', '.join(ZOO)})",
        param_hint="--model",
    )


@main.group()
def export() -> None:
    """Export models for deployment."""


@export.command("lce")
@click.option("--model", "spec", required=True, help="Saved model (.keras/.h5) or zoo name.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Flatbuffer path.")
@click.option(
    "--calibration",
    "faces_dir",
    type=click.Path(file_okay=False, exists=True),
    help="Face crops for the parity check and, with --int8, the representative set that "
    "calibrates the int8 ranges (default: synthetic faces).",
)
@click.option("--count", default=16, show_default=True, type=click.IntRange(1))
@click.option(
    "--int8",
    is_flag=True,
    help="Quantize the float parts to int8, ranges calibrated on --calibration (required).",
)
@click.option(
    "--min-cosine",
    default=0.99,
    show_default=True,
    type=float,
    help="Parity floor, Keras vs the LCE interpreter; below it nothing is written.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def export_lce_cmd(spec, out, faces_dir, count, int8, min_cosine, as_json) -> None:
    """Convert to a Larq Compute Engine flatbuffer: op census, parity, atomic write."""
    from vlrface.export import lce

    if int8 and not faces_dir:
        raise click.UsageError("--int8 needs --calibration DIR: representative face crops")
    model = _load_model(spec)
    faces, source = _face_batch(faces_dir, count)
    flatbuffer, report = lce.export(model, faces, min_cosine, faces if int8 else None)
    lce.write_atomic(out, flatbuffer)
    _emit({"model": spec, "out": out, "parity_inputs": source, **report}, as_json)


@main.command("latency")
@click.option(
    "--model",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="An LCE flatbuffer (.tflite) or an ONNX model (.onnx).",
)
@click.option(
    "--device",
    "devices_",
    multiple=True,
    required=True,
    help="Device name(s) from vlrface/latency/devices.yaml; repeatable.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "estimated", "measured"]),
    default="auto",
    show_default=True,
    help="measured: run it here (arm64 only); auto: measured if possible, else estimated.",
)
@click.option(
    "--benchmark-binary",
    type=click.Path(dir_okay=False),
    help="LCE's lce_benchmark_model (aarch64 build), for measured .tflite latency.",
)
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def latency_cmd(path, devices_, backend, benchmark_binary, runs, as_json) -> None:
    """Single-thread ARM latency of an exported model, with the provenance of every figure."""
    from pathlib import Path

    from vlrface.latency import estimate, measure

    unknown = sorted(set(devices_) - set(estimate.devices()))
    if unknown:
        raise click.BadParameter(
            f"unknown device(s) {unknown}; known: {sorted(estimate.devices())}",
            param_hint="--device",
        )
    suffix = Path(path).suffix
    if suffix not in (".tflite", ".onnx"):
        raise click.BadParameter(f"{path}: expected a .tflite or .onnx file", param_hint="--model")
    can_measure = measure.on_arm() and (suffix == ".onnx" or benchmark_binary)
    if backend == "measured" or (backend == "auto" and can_measure):
        if suffix == ".onnx":
            result = measure.measure_onnx(path, runs)
        else:
            if not benchmark_binary:
                raise click.UsageError("measured .tflite latency needs --benchmark-binary")
            result = measure.measure_lce(path, benchmark_binary, runs)
        # one host is one device: every named device gets this host's figure
        figures = {d: {**result, "source": "measured"} for d in devices_}
    elif suffix == ".onnx":
        raise click.UsageError(
            f"{path}: the ARM cost model prices LCE flatbuffers; measure ONNX models on an "
            "arm64 host (--backend measured)"
        )
    else:
        from vlrface.export.lce import census

        flatbuffer = Path(path).read_bytes()
        if flatbuffer[4:8] != b"TFL3":
            raise click.BadParameter(f"{path}: not a TFLite flatbuffer", param_hint="--model")
        feats = census(flatbuffer)["cost_features"]
        figures = {
            d: {
                "ms": estimate.estimate_ms(feats, d),
                "source": "estimated",
                "method": estimate.METHOD,
            }
            for d in devices_
        }
    sources = {f["source"] for f in figures.values()}
    payload = {"model": path, "latency.source": sources.pop()}
    for device, fig in figures.items():
        payload[f"latency.{device}.ms"] = fig["ms"]
    payload["details"] = figures
    _emit(payload, as_json)


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
