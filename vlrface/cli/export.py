"""``vlrface export lce|onnx``: a model to its deployment format, with op census and parity;
the file is written atomically, and only when parity clears the floor."""

from __future__ import annotations

import click

from vlrface.cli._common import emit, face_batch, face_images, json_option, model_ref


@click.group()
def export() -> None:
    """Export models for deployment."""


def _calibration(help_: str):
    return click.option(
        "--calibration",
        "faces_dir",
        type=click.Path(file_okay=False, exists=True),
        help=help_,
    )


_count_option = click.option("--count", default=16, show_default=True, type=click.IntRange(1))


def _min_cosine(reference: str):
    return click.option(
        "--min-cosine",
        default=0.99,
        show_default=True,
        type=float,
        help=f"Parity floor, {reference}; below it nothing is written.",
    )


def _model_and_out(model_help: str, out_help: str):
    """The ``--model`` (a reference, ``vlrface.references``) and ``--out`` options."""

    def add(command):
        command = click.option(
            "--out", required=True, type=click.Path(dir_okay=False), help=out_help
        )(command)
        return click.option("--model", "spec", required=True, help=model_help)(command)

    return add


@export.command("lce")
@_model_and_out(
    "A Keras model: a .keras/.h5 file, a zoo name, or a registered version "
    "(models:/<name>@<alias> or models:/<name>/<version>: its Keras backbone).",
    "Flatbuffer path.",
)
@_calibration(
    "Face crops for the parity check and, with --int8, the representative set that "
    "calibrates the int8 ranges (default: synthetic faces)."
)
@_count_option
@click.option(
    "--int8",
    is_flag=True,
    help="Quantize the float parts to int8, ranges calibrated on --calibration (required).",
)
@_min_cosine("Keras vs the LCE interpreter")
@json_option
def export_lce_cmd(spec, out, faces_dir, count, int8, min_cosine, as_json) -> None:
    """Convert to a Larq Compute Engine flatbuffer: op census, parity, atomic write."""
    from vlrface.export import lce
    from vlrface.references import keras_model

    if int8 and not faces_dir:
        raise click.UsageError("--int8 needs --calibration DIR: representative face crops")
    model = keras_model(model_ref(spec))
    faces, source = face_batch(faces_dir, count)
    flatbuffer, report = lce.export(model, faces, min_cosine, faces if int8 else None)
    lce.write_atomic(out, flatbuffer)
    emit({"model": spec, "out": out, "parity_inputs": source, **report}, as_json)


@export.command("onnx")
@_model_and_out(
    "A PyTorch model: a vlrface checkpoint (.pt/.pth), a PyTorch zoo name, or a "
    "registered ONNX version (models:/<name>@<alias> or /<version>: its stored checkpoint).",
    "ONNX file path.",
)
@_calibration(
    "Face crops for the parity check, put through the model's own preprocessing "
    "(default: synthetic faces)."
)
@_count_option
@_min_cosine("PyTorch vs onnxruntime")
@json_option
def export_onnx_cmd(spec, out, faces_dir, count, min_cosine, as_json) -> None:
    """Export to ONNX (opset 17, dynamic batch): checker, op census, parity, atomic write."""
    from vlrface.export import onnx
    from vlrface.references import torch_model

    faces, source = face_images(faces_dir, count)
    report = onnx.export_faces(torch_model(model_ref(spec)), out, faces, min_cosine)
    emit({"model": spec, "out": out, "parity_inputs": source, **report}, as_json)


COMMANDS = [export]
