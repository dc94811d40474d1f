"""What several command groups share: options, the registry client, model references, faces."""

from __future__ import annotations

import click

from vlrface.cli._output import emit  # noqa: F401 - re-exported for the command modules

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

tracking_uri_option = click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking URI (default: the active ZenML stack's tracker).",
)

CHAMPION = "models:/binaryfacenet@champion"
MODEL_FORMS = "a .keras/.h5/.tflite/.onnx file, a zoo name, models:/<name>@<alias> or /<version>"


def registry_client(tracking_uri: str | None):
    """An MLflow client on ``tracking_uri`` (default: the active ZenML stack's tracker) that
    fails fast when the server is unreachable."""
    from vlrface import registry

    registry.fail_fast()
    if not tracking_uri:
        from vlrface.stack import active_tracking_uri

        tracking_uri = active_tracking_uri()
    return registry.client_for(tracking_uri), tracking_uri


def model_ref(text: str):
    """``text`` as a model reference (``vlrface.references``); a bad one is a one-line error."""
    from vlrface.references import parse

    return parse(text)


def face_images(faces_dir: str | None, count: int):
    """``(uint8 112x112 RGB faces, where from)``: images under ``faces_dir``, else rendered
    synthetic faces."""
    import numpy as np

    from vlrface.preprocess import load_rgb

    if faces_dir:
        from pathlib import Path

        paths = sorted(
            p for p in Path(faces_dir).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
        )[:count]
        if not paths:
            raise click.ClickException(f"{faces_dir}: no .jpg/.png face images found")
        return np.stack([load_rgb(p, 112) for p in paths]), faces_dir
    from vlrface.data.synthetic import render_face

    return np.stack([render_face(0, i, 0) for i in range(count)]), "synthetic faces"


def face_batch(faces_dir: str | None, count: int):
    """``face_images`` normalised the Larq models' way (``preprocess.normalize``)."""
    from vlrface.preprocess import normalize

    faces, source = face_images(faces_dir, count)
    return normalize(faces), source
