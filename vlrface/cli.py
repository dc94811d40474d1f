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

    from vlrface.data import alignment, datasets
    from vlrface.data.manifest import build_manifest

    spec = datasets.get(dataset)
    given = {k: v for k, v in protocol.items() if v is not None}
    if wrong := sorted(set(given) - {p.kwarg for p in spec.protocol}):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in wrong)
        raise click.UsageError(f"{flags} do(es) not apply to dataset {dataset}")
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
        _emit({**report, "out": out}, True)
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


@main.group()
def infra() -> None:
    """Run configurations for the stacks of infra/."""


@infra.command("config")
@click.argument("profile", type=click.Path(exists=True, dir_okay=False))
@click.option("--stack", "stack_name", required=True, help="local, kubernetes or kubeflow.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False))
def infra_config(profile, stack_name, out) -> None:
    """PROFILE plus the stack's Docker settings and per-step resources, as one
    `zenml pipeline run -c` file."""
    from pathlib import Path

    import yaml

    from vlrface.infra import run_config

    cfg = run_config(profile, stack_name)
    Path(out).write_text(yaml.safe_dump(cfg, sort_keys=False))
    click.echo(f"{out}: {profile} on the {stack_name} stack ({len(cfg['steps'])} steps configured)")


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
    from vlrface.models.keras import build_named
    from vlrface.models.keras.efficiency import efficiency

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
    from vlrface.models.keras.checkpoint import import_checkpoint

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

    from vlrface.models.keras import ZOO, build_named

    if spec in ZOO:
        return build_named(spec)
    path = Path(spec)
    if path.suffix == ".h5":
        from vlrface.models.keras.checkpoint import load_h5

        return load_h5(path)
    if path.suffix == ".keras" and path.is_file():
        from vlrface.materializers import load_keras

        return load_keras(str(path))
    raise click.BadParameter(
        f"{spec}: neither a .keras/.h5 file nor a zoo model ({', '.join(ZOO)})",
        param_hint="--model",
    )


_EVAL_FILES = {  # --option: (runner keyword, help)
    "pairs": ("pairs", "lfw: pairs.txt (default <data>/pairs.txt)."),
    "bin": ("bin", "lfw: an aligned insightface lfw.bin instead of the raw release."),
    "features": ("features", "scface: features.txt."),
    "annotations": ("annotations", "scface: scface_annotations.txt (4 landmarks)."),
    "probe-mat": ("probe_mat", "tinyface: probe_img_ID_pairs.mat."),
    "gallery-mat": ("gallery_mat", "tinyface/survface: the gallery .mat list."),
    "positive-mat": ("positive_mat", "survface: positive_pairs_names.mat."),
    "negative-mat": ("negative_mat", "survface: negative_pairs_names.mat."),
    "mated-probe-mat": ("mated_probe_mat", "survface: mated_probe_img_ID_pairs.mat."),
}


def _eval_file_options(f):
    for option, (_, helps) in reversed(_EVAL_FILES.items()):
        f = click.option(f"--{option}", option.replace("-", "_"), help=helps)(f)
    return f


def _eval_embedder(spec: str):
    """An ``Embedder`` for ``spec``: a .tflite (LCE) or .onnx file, a models:/ or runs:/ URI
    (the version's artifacts: its .tflite, else .onnx, else Keras model), a .keras/.h5 file or a
    zoo name."""
    from pathlib import Path

    from vlrface import embedders

    def from_file(path: Path):
        if path.suffix == ".tflite":
            return embedders.LCEEmbedder(path.read_bytes())
        if path.suffix == ".onnx":
            if not hasattr(embedders, "ONNXEmbedder"):
                raise click.ClickException(f"{path}: this vlrface has no ONNX runtime embedder")
            return embedders.ONNXEmbedder(path)
        return None

    if spec.startswith(("models:/", "runs:/")):
        from vlrface.errors import VlrfaceError
        from vlrface.registry import fetch_verified

        _use_registry(spec)
        try:  # every file checked against the version's sha256 tags first
            folder = fetch_verified(spec)
        except VlrfaceError:
            raise
        except Exception as exc:  # MLflow raises many types: one line for the user
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise click.ClickException(f"cannot load model {spec}: {first}") from None
        files = sorted(folder.rglob("*")) if folder.is_dir() else [folder]
        for suffix in (".tflite", ".onnx", ".keras", ".h5"):
            if found := [p for p in files if p.suffix == suffix]:
                spec = str(found[0])
                break
        else:
            raise click.ClickException(f"{spec}: no .tflite, .onnx, .keras or .h5 model inside")
    path = Path(spec)
    if path.suffix in (".tflite", ".onnx"):
        if not path.is_file():
            raise click.ClickException(f"{path}: model file missing")
        return from_file(path)
    try:
        return embedders.KerasEmbedder(_load_model(spec))
    except click.BadParameter as exc:
        raise click.ClickException(exc.message) from None


@main.command("evaluate")
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
    help="A .keras/.h5/.tflite/.onnx file, a zoo name, or models:/<name>@<alias>.",
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
    from vlrface.protocols.runners import ALIGNABLE, PROTOCOL_FILES, PROTOCOLS

    if protocol not in PROTOCOLS:
        raise click.ClickException(
            f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}"
        )
    if not Path(root).exists():
        raise click.ClickException(f"{root}: data root does not exist")
    kwargs = {}
    for option, value in files.items():
        if value is None:
            continue
        keyword = _EVAL_FILES[option.replace("_", "-")][0]
        if keyword not in PROTOCOL_FILES[protocol]:
            raise click.ClickException(f"--{option.replace('_', '-')} does not apply to {protocol}")
        if not Path(value).is_file():
            raise click.ClickException(f"{value}: protocol file missing")
        kwargs[keyword] = value
    if resolutions is not None:
        try:
            kwargs["resolutions"] = parse_resolutions(resolutions)
        except ValueError as exc:
            raise click.ClickException(f"--resolutions {resolutions!r}: {exc}") from None
    if protocol in ALIGNABLE:
        kwargs["align"] = align
    elif align not in ("auto", "none"):
        raise click.ClickException(
            f"--align {align}: {protocol} is native low resolution (no landmarks, too small "
            "for the face detector); use auto or none"
        )
    embedder = _eval_embedder(spec)
    try:
        metrics, artifacts = PROTOCOLS[protocol](
            embedder, root, flip=not no_flip, up=up, progress=True, **kwargs
        )
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
        _emit({"protocol": protocol, "model": spec, "alignment": how, **metrics}, False)
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
    _emit(payload, True)


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
    type=click.Choice(["auto", "estimated", "measured", "emulated"]),
    default="auto",
    show_default=True,
    help="measured: run it here (arm64 only); emulated: count the model's aarch64 instructions "
    "under qemu-aarch64 (.tflite: with --benchmark-binary; .onnx: onnxruntime, set up on first "
    "use); auto: measured if possible, else emulated for a .tflite with --benchmark-binary and "
    "qemu-aarch64 on PATH, else estimated (.tflite). auto never emulates an .onnx: ask for it.",
)
@click.option(
    "--benchmark-binary",
    type=click.Path(dir_okay=False),
    help="An aarch64 lce_benchmark_model (LCE's lce_benchmark_model_aarch64), for measured or "
    "emulated .tflite latency.",
)
@click.option(
    "--sysroot",
    type=click.Path(file_okay=False),
    help="The benchmark binary's aarch64 shared libraries, for qemu-aarch64 -L (emulated).",
)
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def latency_cmd(path, devices_, backend, benchmark_binary, sysroot, runs, as_json) -> None:
    """Single-thread ARM latency of an exported model, with the provenance of every figure:
    ms and instructions per inference per device.

    ``--backend emulated`` counts aarch64 instructions under qemu-user (.tflite: LCE's benchmark
    binary, ``vlrface.latency.emulate_lce``; .onnx: onnxruntime, ``vlrface.latency.emulate``)
    and converts them with the devices' constants.
    """
    import shutil
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
    if suffix == ".tflite" and backend == "auto" and benchmark_binary and not measure.on_arm():
        backend = "emulated" if shutil.which("qemu-aarch64") else "estimated"
        if backend == "estimated":
            click.echo("qemu-aarch64 not found: estimated by the cost model instead", err=True)
    if backend == "emulated":
        if suffix == ".onnx":
            from vlrface.latency import emulate

            result = emulate.emulate(path, list(devices_))
            for device in devices_:
                result[f"latency.{device}.instructions"] = result["instructions"]
            _emit(result, as_json)
            return
        if not benchmark_binary:
            raise click.UsageError("emulated .tflite latency needs --benchmark-binary")
        from vlrface.latency.emulate_lce import emulate_lce

        _emit(emulate_lce(path, list(devices_), benchmark_binary, sysroot), as_json)
        return
    can_measure = measure.on_arm() and (suffix == ".onnx" or benchmark_binary)
    if backend == "measured" or (backend == "auto" and can_measure):
        if suffix == ".onnx":
            result = measure.measure_onnx(path, runs)
        else:
            if not benchmark_binary:
                raise click.UsageError("measured .tflite latency needs --benchmark-binary")
            result = measure.measure_lce(path, benchmark_binary, runs)
        # one host is one device: every named device gets this host's figure
        figures = {d: {**result, "source": "measured", "instructions": None} for d in devices_}
    elif suffix == ".onnx":
        raise click.UsageError(
            f"{path}: the ARM cost model prices LCE flatbuffers; measure ONNX models on an "
            "arm64 host (--backend measured) or under emulation (--backend emulated)"
        )
    else:
        from vlrface.export.lce import census
        from vlrface.latency.costmodel import predict_instructions

        flatbuffer = Path(path).read_bytes()
        if flatbuffer[4:8] != b"TFL3":
            raise click.BadParameter(f"{path}: not a TFLite flatbuffer", param_hint="--model")
        feats = census(flatbuffer)["cost_features"]
        insns = predict_instructions(feats)
        figures = {
            d: {
                "ms": estimate.estimate_ms(feats, d),
                "instructions": insns,
                "source": "estimated",
                "method": estimate.METHOD,
            }
            for d in devices_
        }
    sources = {f["source"] for f in figures.values()}
    payload = {"model": path, "latency.source": sources.pop()}
    for device, fig in figures.items():
        payload[f"latency.{device}.ms"] = fig["ms"]
        payload[f"latency.{device}.instructions"] = fig["instructions"]
    payload["instructions"] = next(iter(figures.values()))["instructions"]
    payload["details"] = figures
    _emit(payload, as_json)


@main.group()
def models() -> None:
    """The MLflow model registry."""


def _registry(tracking_uri: str | None):
    """An MLflow client on ``tracking_uri`` (default: the active ZenML stack's tracker) that
    fails fast when the server is unreachable."""
    from vlrface import registry

    registry.fail_fast()
    if not tracking_uri:
        from vlrface.stack import active_tracking_uri

        tracking_uri = active_tracking_uri()
    return registry.client_for(tracking_uri), tracking_uri


_tracking_uri_option = click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking URI (default: the active ZenML stack's tracker).",
)


@models.command("list")
@click.option("--name", help="Only this registered model.")
@_tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of versions.")
def models_list(name, tracking_uri, as_json) -> None:
    """Registered versions with aliases, key metrics and gate results."""
    from vlrface import registry

    client, uri = _registry(tracking_uri)
    with registry.errors(uri):
        rows = registry.list_versions(client, name)
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


@models.command("history")
@click.option("--name", help="Only this registered model.")
@_tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of events.")
def models_history(name, tracking_uri, as_json) -> None:
    """Every promote / refuse / rollback event, newest first."""
    from vlrface import registry

    client, uri = _registry(tracking_uri)
    with registry.errors(uri):
        events = registry.history(client, name)
    if as_json:
        click.echo(json.dumps(events, indent=2))
        return
    if not events:
        click.echo("no promotion history")
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
@_tracking_uri_option
def models_card(name, version, tracking_uri) -> None:
    """Print a version's Markdown model card (rendered from the registry as it is now)."""
    from vlrface import registry
    from vlrface.reports.model_card import render

    client, uri = _registry(tracking_uri)
    with registry.errors(uri):
        mv = registry.get_version(client, name, version)
        card = render(registry.card_inputs(client, mv))
    click.echo(card, nl=False)


@main.command("promote")
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
@_tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def promote_cmd(name, version, rollback, dry_run, policy_path, tracking_uri, as_json) -> None:
    """Promote a version to `champion` if it passes the policy against the current champion.

    Exit status: 0 promoted (or would be, with --dry-run), 3 refused, 1 on an error.
    """
    from pathlib import Path

    from vlrface import promotion, registry

    if rollback and (version or policy_path):
        raise click.UsageError("--rollback takes neither --version nor --policy")
    policy = promotion.load_policy(policy_path) if policy_path else None
    client, uri = _registry(tracking_uri)
    with registry.errors(uri):
        if rollback:
            event = registry.rollback(client, name, dry_run=dry_run)
            if as_json:
                click.echo(json.dumps({**event, "dry_run": dry_run}, indent=2))
            else:
                verb = "would roll back" if dry_run else "rolled back"
                click.echo(f"{name}: {verb} champion v{event['previous']} -> v{event['version']}")
            return
        if policy is None:
            default = promotion.DEFAULT_POLICY
            if Path(default).is_file():
                policy = promotion.load_policy(default)
            else:
                policy = registry.policy_of(registry.get_version(client, name, version))
            if policy is None:
                raise registry.RegistryError(
                    f"no promotion policy: {default} does not exist and the version records "
                    "none; pass --policy FILE"
                )
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


_CHAMPION = "models:/binaryfacenet@champion"
_MODEL_HELP = "MLflow model URI (models:/<name>@<alias>, runs:/..., or a local model directory)."


def _use_registry(uri: str) -> None:
    """``models:/`` URIs resolve on ``MLFLOW_TRACKING_URI``, else on the active ZenML stack's
    MLflow tracker (the registry the pipeline writes to)."""
    import os

    if uri.startswith("models:/") and not os.environ.get("MLFLOW_TRACKING_URI"):
        import mlflow

        from vlrface.stack import active_tracking_uri

        try:
            mlflow.set_tracking_uri(active_tracking_uri())
        except Exception as exc:  # no ZenML repo/stack here: one line for the user
            raise click.ClickException(
                f"cannot resolve {uri}: set MLFLOW_TRACKING_URI ({str(exc).splitlines()[0]})"
            ) from None


def _served(uri: str):
    from vlrface.errors import VlrfaceError
    from vlrface.serving import load

    _use_registry(uri)
    try:
        return load(uri)
    except VlrfaceError:
        raise
    except Exception as exc:  # MLflow raises many types: one line for the user
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise click.ClickException(f"cannot load model {uri}: {first}") from None


def _photos(paths, align: bool = True):
    """Photo files as a request DataFrame (columns ``image`` base64, ``name``, ``align``).
    Every file is decoded first: one that is not an image is named before any model loads."""
    import pandas as pd

    from vlrface.preprocess import load_rgb
    from vlrface.serving import encode_image

    for p in paths:
        load_rgb(p)  # DataError: "<file>: cannot decode image ..."
    return pd.DataFrame(
        {
            "image": [encode_image(p) for p in paths],
            "name": [str(p) for p in paths],
            "align": [bool(align)] * len(paths),
        }
    )


SYNTHETIC_NOTE = (
    "this model was trained on SYNTHETIC faces: its scores and decisions do not describe real faces"
)


def _synthetic(model, uri: str) -> bool:
    """Whether the served model learnt from synthetic faces: its model config, else (older
    versions) the registered version's ``data.synthetic`` tag."""
    flag = (getattr(model, "model_config", None) or {}).get("synthetic")
    if flag is None and uri.startswith("models:/"):
        try:
            from mlflow import MlflowClient
            from mlflow.store.artifact.utils.models import get_model_name_and_version

            client = MlflowClient()
            name, version = get_model_name_and_version(client, uri)
            flag = client.get_model_version(name, version).tags.get("data.synthetic") == "true"
        except Exception:  # the tag is a courtesy for old versions: never fail a verify on it
            flag = None
    return bool(flag)


_align_option = click.option(
    "--no-align",
    is_flag=True,
    help="The photos are aligned crops: skip face detection and alignment.",
)


@main.command("verify")
@click.argument("image_a", type=click.Path(exists=True, dir_okay=False))
@click.argument("image_b", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "uri", default=_CHAMPION, show_default=True, help=_MODEL_HELP)
@_align_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify_cmd(image_a, image_b, uri, no_align, as_json) -> None:
    """Are two face photos the same person? Cosine score and, with the model's calibrated
    threshold, the decision. Raw photos are detected and aligned (--no-align for crops)."""
    a, b = _photos([image_a], not no_align), _photos([image_b], not no_align)
    request = a.assign(image_b=b["image"], name_b=b["name"])
    model = _served(uri)
    row = model.predict(request).iloc[0]
    payload = {"model": uri, "score": float(row["score"])}
    if "same" in row:
        payload["same"] = bool(row["same"]) if as_json else ("yes" if row["same"] else "no")
        payload["threshold"] = float((model.model_config or {})["threshold"])
    else:
        payload["same"] = None if as_json else "unknown (the model carries no threshold)"
    payload["alignment"] = [row["alignment"], row["alignment_b"]]
    if not as_json:
        payload["alignment"] = ", ".join(payload["alignment"])
    if _synthetic(model, uri):
        payload["warning"] = SYNTHETIC_NOTE
    _emit(payload, as_json)


@main.command("enroll")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--gallery",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Gallery file to write (.npz): one mean descriptor per identity.",
)
@click.option("--model", "uri", default=_CHAMPION, show_default=True, help=_MODEL_HELP)
@_align_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def enroll_cmd(folder, out, uri, no_align, as_json) -> None:
    """Enroll <folder>/<identity>/*.jpg|png: a gallery of one descriptor per identity."""
    import io
    from pathlib import Path

    import numpy as np

    from vlrface.fileio import write_atomic

    people = {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        for d in sorted(Path(folder).iterdir())
        if d.is_dir()
    }
    people = {name: photos for name, photos in people.items() if photos}
    if not people:
        raise click.ClickException(f"{folder}: no <identity>/<photo>.jpg|png to enroll")
    requests = {name: _photos(photos, not no_align) for name, photos in people.items()}
    model = _served(uri)
    names, means, how = [], [], {}
    for name, request in requests.items():
        answer = model.predict(request)
        e = np.array(answer["embedding"].tolist()).mean(axis=0)
        names.append(name)
        means.append(e / max(np.linalg.norm(e), 1e-12))
        for method in answer["alignment"]:
            how[method] = how.get(method, 0) + 1
    buffer = io.BytesIO()
    np.savez(buffer, names=np.array(names), descriptors=np.stack(means), model=np.array(uri))
    write_atomic(out, buffer.getvalue())
    payload = {"gallery": out, "identities": len(names), "model": uri, "alignment": how}
    if _synthetic(model, uri):
        payload["warning"] = SYNTHETIC_NOTE
    _emit(payload, as_json)


@main.command("identify")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--gallery", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "uri", default=None, help=_MODEL_HELP + " Default: the gallery's.")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1))
@_align_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def identify_cmd(image, gallery, uri, top, no_align, as_json) -> None:
    """Rank the enrolled identities of a gallery by similarity to a face photo."""
    import numpy as np

    request = _photos([image], not no_align)
    try:
        g = np.load(gallery)
        names, descriptors, enrolled_with = g["names"], g["descriptors"], str(g["model"])
    except (OSError, ValueError, KeyError) as exc:
        raise click.ClickException(
            f"{gallery}: not a gallery written by vlrface enroll ({exc})"
        ) from None
    uri = uri or enrolled_with
    model = _served(uri)
    answer = model.predict(request).iloc[0]
    probe = np.array(answer["embedding"])
    scores = descriptors @ probe
    order = np.argsort(-scores, kind="stable")[:top]
    ranked = [{"identity": str(names[i]), "score": float(scores[i])} for i in order]
    payload = {"model": uri, "candidates": ranked, "alignment": answer["alignment"]}
    if _synthetic(model, uri):
        payload["warning"] = SYNTHETIC_NOTE
    _emit(payload, as_json)


def one_line_error(exc: BaseException) -> str:
    """An exception as the one line the CLI prints: store errors (MLflow, SQL, locked or
    unreachable databases), OS and parser errors say what failed, not where in the code."""
    first = (str(exc).strip().splitlines() or [""])[0].strip()
    name = type(exc).__name__
    module = type(exc).__module__.split(".")[0]
    if module == "mlflow":
        return f"MLflow store: {first[:300]}"
    if module in ("sqlalchemy", "sqlite3", "psycopg2", "pymysql"):
        return f"tracking database: {first[:300]}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or first}"
    return f"{name}: {first[:300]}" if first else name


def run() -> None:
    """Console entry point: ``VlrfaceError``s (click) and any other failure print as one
    ``Error:`` line and exit 1 (``VLRFACE_DEBUG=1`` shows the traceback); SIGTERM ends the
    command as an error, so what it holds is released."""
    import os
    import signal

    def _terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    try:
        main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into a line
        if os.environ.get("VLRFACE_DEBUG"):
            raise
        click.echo(f"Error: {one_line_error(exc)}", err=True)
        sys.exit(1)


def _model_spec(spec: str) -> tuple[str, str | None, int | None]:
    """``name@alias`` or ``name@<version>`` (or ``name``: its latest version)."""
    name, _, at = spec.partition("@")
    if not name or (_ and not at):
        raise click.BadParameter(
            f"{spec!r}: expected <name>@<alias> or <name>@<version>", param_hint="--model"
        )
    if not at:
        return name, None, None
    return (name, None, int(at)) if at.isdigit() else (name, at, None)


@main.command("report")
@click.option(
    "--model",
    "specs",
    required=True,
    multiple=True,
    help="A registered model as <name>@<alias> or <name>@<version>; repeat to compare several.",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Markdown report to write."
)
@click.option("--html", is_flag=True, help="Also write the report as HTML (<out> with .html).")
@click.option("--digits", default=4, show_default=True, type=click.IntRange(1, 8))
@_tracking_uri_option
def report_cmd(specs, out, html, digits, tracking_uri) -> None:
    """Registered models side by side: their evaluation metrics in the papers' table layouts."""
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    from vlrface import registry
    from vlrface.fileio import write_atomic
    from vlrface.reports.compare import render_report, version_metrics

    parsed = [_model_spec(s) for s in specs]
    client, uri = _registry(tracking_uri)
    results, models = {}, []
    with registry.errors(uri):
        for spec, (name, alias, version) in zip(specs, parsed, strict=True):
            if alias is not None:
                registry.get_model(client, name)
                try:
                    mv = client.get_model_version_by_alias(name, alias)
                except MlflowException as exc:
                    if exc.error_code in registry.NOT_FOUND:
                        raise registry.RegistryError(
                            f"--model {spec}: registered model '{name}' has no alias '{alias}'"
                        ) from None
                    raise
            else:
                mv = registry.get_version(client, name, version)
            aliases = sorted(
                a
                for a, v in registry.get_model(client, name).aliases.items()
                if str(v) == str(mv.version)
            )
            label = f"{name} v{mv.version}" + (f" ({', '.join(aliases)})" if aliases else "")
            if label in results:
                raise click.UsageError(f"--model {spec}: {label} is already in the report")
            results[label] = version_metrics(client, mv)
            tags = dict(mv.tags)
            models.append(
                {
                    "label": label,
                    "name": name,
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
    write_atomic(out, render_report(results, models, digits=digits).encode())
    written = [out]
    if html:
        page = Path(out).with_suffix(".html")
        write_atomic(page, render_report(results, models, html=True, digits=digits).encode())
        written.append(str(page))
    click.echo(f"compared {len(results)} model(s) in {', '.join(written)}")
    for label in empty:
        click.echo(f"warning: {label} has no eval.* metrics", err=True)
