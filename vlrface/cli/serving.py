"""``vlrface verify``, ``enroll`` and ``identify``: face photos against a served model, the
registered champion by default; any model reference works (``vlrface.references``)."""

from __future__ import annotations

import click

from vlrface.cli._common import CHAMPION, emit, json_option, model_ref

_MODEL_HELP = (
    "The model: models:/<name>@<alias> or /<version>, runs:/..., a local MLflow model "
    "directory, or a .tflite/.onnx/.keras/.h5 file or zoo name (no calibrated threshold)."
)


def _served(uri: str):
    from vlrface.references import served

    return served(model_ref(uri))


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
    ref = model_ref(uri)
    if flag is None and ref.kind == "registered":
        from vlrface.references import registered_version

        try:
            flag = registered_version(ref).tags.get("data.synthetic") == "true"
        except Exception:  # the tag is a courtesy for old versions: never fail a verify on it
            flag = None
    return bool(flag)


_align_option = click.option(
    "--no-align",
    is_flag=True,
    help="The photos are aligned crops: skip face detection and alignment.",
)


@click.command("verify")
@click.argument("image_a", type=click.Path(exists=True, dir_okay=False))
@click.argument("image_b", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "uri", default=CHAMPION, show_default=True, help=_MODEL_HELP)
@_align_option
@json_option
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
    emit(payload, as_json)


@click.command("enroll")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--gallery",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Gallery file to write (.npz): one mean descriptor per identity.",
)
@click.option("--model", "uri", default=CHAMPION, show_default=True, help=_MODEL_HELP)
@_align_option
@json_option
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
    emit(payload, as_json)


@click.command("identify")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--gallery", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "uri", default=None, help=_MODEL_HELP + " Default: the gallery's.")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1))
@_align_option
@json_option
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
    emit(payload, as_json)


COMMANDS = [verify_cmd, enroll_cmd, identify_cmd]
