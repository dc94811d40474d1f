"""Serving: the pyfunc model answers with the evaluation's descriptors, in process and through
``mlflow models serve`` on localhost; verify / enroll / identify from the command line."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from vlrface import serving
from vlrface._keras import tf
from vlrface.cli import main
from vlrface.data.synthetic import write_casia_layout
from vlrface.embedders import LCEEmbedder, embed_images
from vlrface.export import lce
from vlrface.models.keras.binaryfacenet_lce import build_binaryfacenet_lce
from vlrface.preprocess import load_rgb, normalize


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A small binaryfacenet_lce flatbuffer, saved as an MLflow pyfunc model, and some faces."""
    tmp = tmp_path_factory.mktemp("serving")
    tf.keras.utils.set_random_seed(0)
    flatbuffer = lce.convert(build_binaryfacenet_lce(channels=32, embedding=32))
    (tmp / "m.tflite").write_bytes(flatbuffer)
    model_dir = serving.save(tmp / "model", tmp / "m.tflite", threshold=0.5, synthetic=True)
    faces = write_casia_layout(tmp / "faces", 3, 2, seed=5, progress=False)
    return model_dir, flatbuffer, faces


def photos(faces):
    return sorted(faces.rglob("*.jpg"))


def expected(flatbuffer, paths):
    images = normalize(np.stack([load_rgb(p, 112) for p in paths]))
    return embed_images(LCEEmbedder(flatbuffer), images)


def test_pyfunc_gives_the_evaluation_descriptors(served):
    model_dir, flatbuffer, faces = served
    paths = photos(faces)
    model = serving.load(str(model_dir))
    request = pd.DataFrame({"image": [serving.encode_image(p) for p in paths]})
    out = model.predict(request)
    got = np.array(out["embedding"].tolist())
    np.testing.assert_allclose(got, expected(flatbuffer, paths), atol=1e-6)

    pair = request.iloc[:2].assign(image_b=request["image"].iloc[2:4].to_numpy())
    scored = model.predict(pair)
    np.testing.assert_allclose(scored["score"], (got[:2] * got[2:4]).sum(1), atol=1e-6)
    assert list(scored["same"]) == list(scored["score"] > 0.5)
    assert set(out["alignment"]) == {"aligned-crop"}  # 112x112 photos: aligned crops


def test_bad_requests_name_the_row(served):
    model = serving.load(str(served[0]))
    with pytest.raises(serving.RequestError, match="'image' column"):
        model.predict(pd.DataFrame({"photo": ["x"]}))
    with pytest.raises(serving.RequestError, match="row 0 column 'image': not base64"):
        model.predict(pd.DataFrame({"image": ["%%%"]}))
    with pytest.raises(Exception, match="row 0 column 'image': cannot decode"):
        model.predict(pd.DataFrame({"image": ["aGVsbG8="]}))  # base64 of b"hello"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_on_localhost(served, tmp_path):
    model_dir, flatbuffer, faces = served
    paths = photos(faces)[:2]
    port = _free_port()
    bin_dir = os.path.dirname(sys.executable)  # mlflow execs uvicorn from PATH
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        str(model_dir),
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not come up: {(tmp_path / 'serve.log').read_text()}")
            time.sleep(1)
        body = {
            "dataframe_split": {
                "columns": ["image", "image_b"],
                "data": [[serving.encode_image(paths[0]), serving.encode_image(paths[1])]],
            }
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            answer = json.loads(r.read())["predictions"][0]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    want = expected(flatbuffer, paths)
    np.testing.assert_allclose(answer["embedding"], want[0], atol=1e-5)
    assert answer["score"] == pytest.approx(float(want[0] @ want[1]), abs=1e-5)


def test_verify_enroll_identify(served, tmp_path):
    model_dir, _, faces = served
    run = lambda *a: CliRunner().invoke(main, [*a, "--model", str(model_dir), "--json"])  # noqa: E731
    a, b = photos(faces)[:2]  # two photos of the first identity
    verified = run("verify", str(a), str(b))
    assert verified.exit_code == 0, verified.output
    out = json.loads(verified.output)
    assert -1 - 1e-6 <= out["score"] <= 1 + 1e-6 and out["same"] == (out["score"] > 0.5)
    assert out["threshold"] == 0.5 and out["alignment"] == ["aligned-crop", "aligned-crop"]
    assert "SYNTHETIC faces" in out["warning"]  # the model says what it learnt from
    plain = CliRunner().invoke(main, ["verify", str(a), str(b), "--model", str(model_dir)])
    assert plain.exit_code == 0, plain.output
    assert f"same: {'yes' if out['same'] else 'no'}\n" in plain.output
    assert "warning: this model was trained on SYNTHETIC faces" in plain.output

    gallery = tmp_path / "gallery.npz"
    enrolled = run("enroll", str(faces), "--gallery", str(gallery))
    assert enrolled.exit_code == 0, enrolled.output
    assert json.loads(enrolled.output)["identities"] == 3
    found = run("identify", str(a), "--gallery", str(gallery))
    assert found.exit_code == 0, found.output
    ranked = json.loads(found.output)["candidates"]
    assert "SYNTHETIC" in json.loads(found.output)["warning"]
    assert len(ranked) == 3 and ranked[0]["score"] >= ranked[-1]["score"]
    g = np.load(gallery)
    assert set(g["names"]) == {a.parent.name, *(p.parent.name for p in photos(faces))}

    missing = CliRunner().invoke(main, ["verify", str(a), str(b), "--model", str(tmp_path)])
    assert missing.exit_code == 1 and "cannot load model" in missing.output


def test_bad_photos_are_named(served, tmp_path):
    """A file that is not an image is named before any model loads; a photo without a face
    is named, not resized whole; --no-align reads it as a crop."""
    model_dir, _, faces = served
    good = photos(faces)[0]
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    for args in (["verify", str(good), str(text)], ["identify", str(text), "--gallery", str(text)]):
        # a model that does not exist: the photo must be refused first
        out = CliRunner().invoke(main, [*args, "--model", str(tmp_path / "no-model")])
        assert out.exit_code == 1 and "notes.jpg: cannot decode image" in out.output
        assert "cannot load model" not in out.output
    folder = tmp_path / "people" / "someone"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_text("not a photo")
    out = CliRunner().invoke(
        main, ["enroll", str(tmp_path / "people"), "--gallery", str(tmp_path / "g.npz"),
               "--model", str(tmp_path / "no-model")]
    )  # fmt: skip
    assert out.exit_code == 1 and "a.jpg: cannot decode image" in out.output

    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    import cv2

    blank = tmp_path / "wall.jpg"
    cv2.imwrite(str(blank), np.full((200, 160, 3), 90, np.uint8))
    out = CliRunner().invoke(main, ["verify", str(good), str(blank), "--model", str(model_dir)])
    assert out.exit_code == 1, out.output
    assert "wall.jpg (request row 0 column 'image_b'): no face found in the photo" in out.output
    crop = CliRunner().invoke(
        main, ["verify", str(good), str(blank), "--model", str(model_dir), "--no-align", "--json"]
    )
    assert crop.exit_code == 0, crop.output
    assert json.loads(crop.output)["alignment"] == ["none", "none"]
