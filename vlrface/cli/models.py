"""``vlrface efficiency`` and ``vlrface import-checkpoint``: Keras models' figures, and the
BinaryFaceNet authors' checkpoint."""

from __future__ import annotations

import click

from vlrface.cli._common import emit, face_batch, json_option, model_ref


@click.command("efficiency")
@click.argument("model_name", metavar="MODEL")
@json_option
def efficiency_cmd(model_name, as_json) -> None:
    """Binary/float MACs, parameters and size of a Keras model (larq summary): a zoo model's
    backbone (freshly initialised), or the model itself of a .keras/.h5 file or a registered
    version (its Keras backbone, at its trained width).

    MODEL: a .keras/.h5 file, a zoo name, models:/<name>@<alias> or models:/<name>/<version>.
    """
    from vlrface.models.keras.efficiency import efficiency
    from vlrface.references import keras_model

    emit(efficiency(keras_model(model_ref(model_name), output_head=False)), as_json)


@click.command("import-checkpoint")
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
@json_option
def import_checkpoint_cmd(h5, out, faces_dir, count, tolerance, as_json) -> None:
    """Load the BinaryFaceNet authors' .h5 into our definition and verify the embeddings."""
    from vlrface.models.keras.checkpoint import import_checkpoint

    faces, source = face_batch(faces_dir, count)
    model, report = import_checkpoint(h5, faces, tolerance)
    payload = {**report.as_dict(), "faces_source": source}
    if out:
        import tempfile
        from pathlib import Path

        from vlrface.keras_materializer import save_keras

        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            save_keras(model, str(Path(tmp) / "model.keras"))
            Path(tmp, "model.keras").replace(target)
        payload["out"] = str(target)
    emit(payload, as_json)


COMMANDS = [efficiency_cmd, import_checkpoint_cmd]
