"""Model references: the one set of names every command takes for a model, and what each use
(a Keras model, a PyTorch model, an embedder, a served descriptor, a registered version)
makes of it.

A reference is, in the order ``parse`` tries them:

* ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``models:/<name>/latest`` (or
  ``models:/<name>``): a registered version, resolved on ``MLFLOW_TRACKING_URI`` or else the
  active ZenML stack's MLflow tracker; every file is checked against the version's sha256 tags
  before anything reads it (``registry.fetch_verified``);
* ``runs:/<run id>/<path>``: an MLflow run's model directory;
* an existing file (``.keras``, ``.h5``: Keras; ``.tflite``: LCE; ``.onnx``: onnxruntime;
  ``.pt``/``.pth``: a vlrface PyTorch checkpoint) or an MLflow model directory;
* a zoo name (a freshly initialised backbone: ``vlrface.models.keras.ZOO``, and for PyTorch uses
  ``vlrface.models.torch.TORCH_ZOO``);
* ``<name>@<alias>`` or ``<name>@<version>``: a registered version, the short form (``vlrface
  report`` also takes a bare ``<name>``: its latest version).

Anything else is a ``ModelRefError``: one line naming the reference and the forms.
Each use takes the forms it can run and refuses the others in one line that says which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vlrface.errors import VlrfaceError

KERAS = (".keras", ".h5")
LCE = (".tflite",)
ONNX = (".onnx",)
TORCH = (".pt", ".pth")
SUFFIXES = KERAS + LCE + ONNX + TORCH
FORMS = (
    "a .keras/.h5/.tflite/.onnx file, a zoo model, models:/<name>@<alias> or "
    "models:/<name>/<version>"
)


class ModelRefError(VlrfaceError):
    """A model reference that names nothing, or a model this use cannot run."""


Kind = Literal["file", "directory", "zoo", "torch_zoo", "registered", "run"]


@dataclass(frozen=True)
class ModelRef:
    text: str  # as the user wrote it
    kind: Kind
    path: Path | None = None  # file, directory
    name: str | None = None  # zoo model, registered model
    alias: str | None = None
    version: int | None = None  # registered: None with no alias = the latest

    @property
    def uri(self) -> str:
        """``models:/...`` for a registered version, else the text as given."""
        if self.kind != "registered":
            return self.text
        if self.alias is not None:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version if self.version is not None else 'latest'}"

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower() if self.kind == "file" and self.path else ""

    @property
    def remote(self) -> bool:
        return self.kind in ("registered", "run")


def _registered(text: str, rest: str, sep: str) -> ModelRef:
    """``name@alias``/``name@N`` (``sep`` "@") or ``name/N``/``name/latest`` (``sep`` "/")."""
    if "@" in rest:
        name, _, at = rest.partition("@")
        if not name or not at:
            raise ModelRefError(f"{text}: expected <name>@<alias> or <name>@<version>")
        if at.isdigit():
            return ModelRef(text, "registered", name=name, version=int(at))
        return ModelRef(text, "registered", name=name, alias=at)
    name, _, version = rest.partition("/")
    if not name or (version and not (version.isdigit() or version == "latest")):
        raise ModelRefError(
            f"{text}: expected models:/<name>@<alias>, models:/<name>/<version> or "
            "models:/<name>/latest"
        )
    return ModelRef(
        text, "registered", name=name, version=int(version) if version.isdigit() else None
    )


def zoo_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from vlrface.models.keras import ZOO
    from vlrface.models.torch import TORCH_ZOO

    return tuple(ZOO), tuple(TORCH_ZOO)


def parse(text: str, registered_only: bool = False) -> ModelRef:
    """The reference ``text`` names (module docstring); ``registered_only``: only registered
    versions, a bare name meaning its latest (``vlrface report``)."""
    text = str(text).strip()
    if not text:
        raise ModelRefError(f"empty model reference; give {FORMS}")
    if text.startswith("models:/"):
        return _registered(text, text[len("models:/") :].strip("/"), "/")
    if registered_only:
        if "/" in text:
            raise ModelRefError(
                f"{text}: expected a registered model: <name>@<alias>, <name>@<version>, "
                "<name>, or models:/..."
            )
        if "@" not in text:
            return ModelRef(text, "registered", name=text)
        return _registered(text, text, "@")
    if text.startswith("runs:/"):
        return ModelRef(text, "run")
    path = Path(text)
    if path.is_dir():
        return ModelRef(text, "directory", path=path)
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise ModelRefError(
                f"{path}: not a model file (expected {', '.join(SUFFIXES)}, or {FORMS})"
            )
        return ModelRef(text, "file", path=path)
    keras, torch = zoo_names()
    if text in keras:
        return ModelRef(text, "zoo", name=text)
    if text in torch:
        return ModelRef(text, "torch_zoo", name=text)
    if "@" in text and "/" not in text:
        return _registered(text, text, "@")
    if path.suffix.lower() in SUFFIXES or os.sep in text:
        raise ModelRefError(f"{path}: model file not found")
    raise ModelRefError(
        f"unknown model {text!r}: not a file, a zoo model ({', '.join(keras + torch)}), "
        "models:/<name>@<alias> or models:/<name>/<version>"
    )


def refuse(ref: ModelRef, what: str) -> ModelRefError:
    """The one-line error of a use that cannot run ``ref``: ``what`` says what it takes."""
    return ModelRefError(f"{ref.text}: {what}")


# --- resolution ------------------------------------------------------------------------------


def use_registry(ref: ModelRef) -> None:
    """Point MLflow at the registry a ``models:/`` reference lives in: ``MLFLOW_TRACKING_URI``,
    else the active ZenML stack's MLflow tracker (where the pipeline registers)."""
    if ref.kind != "registered" or os.environ.get("MLFLOW_TRACKING_URI"):
        return
    import mlflow

    from vlrface.stack import active_tracking_uri

    try:
        mlflow.set_tracking_uri(active_tracking_uri())
    except Exception as exc:  # no ZenML repo/stack here: one line for the user
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelRefError(
            f"cannot resolve {ref.text}: set MLFLOW_TRACKING_URI ({first})"
        ) from None


def _one_line(ref: ModelRef, exc: Exception) -> ModelRefError:
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return ModelRefError(f"cannot load model {ref.text}: {first}")


def local_copy(ref: ModelRef) -> Path:
    """A local, verified copy of a registered version, a run's model or a model directory
    (``registry.fetch_verified``); a file is itself."""
    if ref.kind == "file":
        return ref.path
    if ref.kind not in ("registered", "run", "directory"):
        raise refuse(ref, "a zoo model has no files")
    from vlrface.registry import fail_fast, fetch_verified

    fail_fast()  # no minutes of retries on a dead server, no download progress bars
    use_registry(ref)
    try:  # every file checked against the version's sha256 tags first
        return fetch_verified(ref.uri if ref.kind != "directory" else str(ref.path))
    except VlrfaceError:
        raise
    except Exception as exc:  # MLflow raises many types: one line for the user
        raise _one_line(ref, exc) from None


def model_file(ref: ModelRef, suffixes: tuple[str, ...]) -> Path:
    """The model file of ``ref`` with one of ``suffixes`` (first suffix first): the file
    itself, or the first such file in a registered version's or a directory's files."""
    if ref.kind == "file":
        if ref.suffix not in suffixes:
            raise refuse(ref, f"expected a {'/'.join(suffixes)} model here, not {ref.suffix}")
        return ref.path
    folder = local_copy(ref)
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else [folder]
    for suffix in suffixes:
        if found := [p for p in files if p.suffix.lower() == suffix]:
            return found[0]
    raise refuse(ref, f"no {', '.join(suffixes)} model inside")


def pretrained_file(text: str) -> Path:
    """The Keras file a configuration's ``model.pretrained`` names: a .keras/.h5 file, or the
    Keras backbone of a registered version or run (warm-starting from ``models:/<name>@champion``
    retrains the champion), fetched with every file checked against its sha256 tags."""
    ref = parse(text)
    if ref.kind in ("zoo", "torch_zoo"):
        raise refuse(ref, "model.pretrained takes trained weights, not a fresh zoo model")
    return model_file(ref, KERAS)


def keras_model(ref: ModelRef, output_head: bool = True):
    """A Keras model: a zoo model freshly initialised, a .keras/.h5 file, or the Keras
    backbone stored with a registered version (``backbone.keras``)."""
    if ref.kind == "zoo":
        from vlrface.models.keras import build_named

        return build_named(ref.name, output_head=output_head)
    if ref.kind == "torch_zoo":
        raise refuse(ref, "a PyTorch zoo model; this use takes a Keras model")
    if ref.kind == "file" and ref.suffix not in KERAS:
        raise refuse(ref, f"this use takes a Keras model ({', '.join(KERAS)}), not {ref.suffix}")
    path = model_file(ref, KERAS)
    if path.suffix.lower() == ".h5":
        from vlrface.models.keras.checkpoint import load_h5

        return load_h5(path)
    from vlrface.keras_materializer import load_keras

    return load_keras(str(path))


def torch_model(ref: ModelRef):
    """A PyTorch backbone: a torch zoo model freshly initialised, a vlrface checkpoint
    (``.pt``/``.pth``), or the portable checkpoint stored with a registered version
    (``backbone.npz`` + ``backbone.json``)."""
    import vlrface.training.torch as tt

    if ref.kind == "torch_zoo":
        from vlrface.models.torch import build_torch

        return build_torch(ref.name)
    if ref.kind == "zoo":
        raise refuse(ref, "a Keras zoo model; this use takes a PyTorch model")
    if ref.kind == "file":
        if ref.suffix not in TORCH:
            raise refuse(ref, f"this use takes a PyTorch checkpoint ({', '.join(TORCH)})")
        return tt.load_model(ref.path)
    weights = model_file(ref, (".npz",))
    meta = weights.with_suffix(".json")
    if not meta.is_file():
        raise refuse(ref, f"{weights.name} has no {meta.name} beside it")
    return tt.from_portable(weights, meta)


def embedder(ref: ModelRef, prefer: tuple[str, ...] = LCE + ONNX + KERAS):
    """An ``Embedder`` over the runtime of ``ref``: a .tflite (LCE interpreter), an .onnx
    (onnxruntime), a Keras model or file; a registered version gives its first file in
    ``prefer`` order (the deployed format first)."""
    from vlrface import embedders

    if ref.kind == "zoo":
        return embedders.KerasEmbedder(keras_model(ref))
    if ref.kind == "torch_zoo":
        return embedders.TorchEmbedder(torch_model(ref))
    if ref.kind == "file" and ref.suffix in TORCH:
        return embedders.TorchEmbedder(torch_model(ref))
    path = model_file(ref, prefer if ref.kind != "file" else SUFFIXES)
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        return embedders.LCEEmbedder(path.read_bytes())
    if suffix == ".onnx":
        return embedders.ONNXEmbedder(path)
    return embedders.KerasEmbedder(keras_model(ModelRef(str(path), "file", path=path)))


def served(ref: ModelRef):
    """A served face descriptor (``predict(DataFrame)``, ``model_config``): the registered
    MLflow pyfunc of a version, a run or a model directory, else one over ``embedder(ref)``
    with the same photo pipeline (``vlrface.serving``) but no calibrated threshold."""
    from vlrface import serving

    if ref.kind in ("registered", "run") or (
        ref.kind == "directory" and (ref.path / "MLmodel").is_file()
    ):
        from vlrface.registry import fail_fast

        fail_fast()
        use_registry(ref)
        try:
            return serving.load(ref.uri if ref.kind != "directory" else str(ref.path))
        except VlrfaceError:
            raise
        except Exception as exc:  # MLflow raises many types: one line for the user
            raise _one_line(ref, exc) from None
    if ref.kind == "directory":
        raise ModelRefError(
            f"cannot load model {ref.text}: no MLmodel file (not a model directory)"
        )
    return serving.LocalModel(embedder(ref))


def registered_version(ref: ModelRef, client=None):
    """The registered version ``ref`` names (``RegistryError`` if there is none)."""
    if ref.kind != "registered":
        raise refuse(ref, "not a registered model (models:/<name>@<alias> or <name>@<version>)")
    from vlrface import registry

    if client is None:
        from mlflow import MlflowClient

        use_registry(ref)
        client = MlflowClient()
    return registry.resolve_version(client, ref.name, ref.alias, ref.version)
