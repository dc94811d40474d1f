"""`vlrface verify` on real, unaligned photos with a real-face model.

The model is the BinaryFaceNet authors' MS1M checkpoint, read from ../shared (never copied)
through the project's import path (``models.checkpoint.import_checkpoint``), converted to an LCE
flatbuffer and saved as the serving pyfunc. The photos are the London set's loose ``crop256``
pairs (neutral / smiling): verify detects and aligns them by default.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from vlrface.cli import main

CHECKPOINT = "reference/binaryfacenet_ms1m_retina_epoch19.h5"
PEOPLE = ["001", "002", "003"]


@pytest.fixture(scope="module")
def real_model(shared_dir, tmp_path_factory):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from vlrface import serving
    from vlrface.data.synthetic import render_face
    from vlrface.export.lce import convert
    from vlrface.models.keras.checkpoint import import_checkpoint
    from vlrface.preprocess import normalize

    faces = normalize(np.stack([render_face(i, 0, 1) for i in range(2)]))
    model, _ = import_checkpoint(shared_dir / CHECKPOINT, faces)
    tmp = tmp_path_factory.mktemp("real")
    (tmp / "m.tflite").write_bytes(convert(model))
    return serving.save(tmp / "model", tmp / "m.tflite", synthetic=False)


def _verify(model_dir, a, b, *extra):
    out = CliRunner().invoke(main, ["verify", str(a), str(b), "--model", str(model_dir), "--json",
                                    *extra])  # fmt: skip
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def test_same_person_scores_clearly_above_different_people(real_model, shared_dir):
    crops = shared_dir / "data" / "london-set" / "crop256"
    same, different = [], []
    for k, person in enumerate(PEOPLE):
        other = PEOPLE[(k + 1) % len(PEOPLE)]
        got = _verify(real_model, crops / person / f"{person}_neutral.jpg",
                      crops / person / f"{person}_smiling.jpg")  # fmt: skip
        assert got["alignment"] == ["detector", "detector"] and "warning" not in got
        same.append(got["score"])
        different.append(
            _verify(
                real_model,
                crops / person / f"{person}_neutral.jpg",
                crops / other / f"{other}_smiling.jpg",
            )["score"]  # fmt: skip
        )
    # measured 0.76-0.94 for the same person, 0.11-0.27 for different people
    assert min(same) > max(different) + 0.3, (same, different)
    # the same loose photos read whole (--no-align): what verify did before alignment
    loose = _verify(real_model, crops / "001" / "001_neutral.jpg",
                    crops / "001" / "001_smiling.jpg", "--no-align")  # fmt: skip
    assert loose["alignment"] == ["none", "none"] and loose["score"] < same[0] - 0.2
