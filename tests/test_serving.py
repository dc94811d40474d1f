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
from vlrface.models.binaryfacenet_lce import build_binaryfacenet_lce
from vlrface.preprocess import load_rgb, normalize


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A small binaryfacenet_lce flatbuffer, saved as an MLflow pyfunc model, and some faces."""
    tmp = tmp_path_factory.mktemp("serving")
    tf.keras.utils.set_random_seed(0)
    flatbuffer = lce.convert(build_binaryfacenet_lce(channels=32, embedding=32))
    (tmp / "m.tflite").write_bytes(flatbuffer)
    model_dir = serving.save(tmp / "model", tmp / "m.tflite", threshold=0.5)
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
    assert -1 <= out["score"] <= 1 and out["same"] == (out["score"] > 0.5)

    gallery = tmp_path / "gallery.npz"
    enrolled = run("enroll", str(faces), "--gallery", str(gallery))
    assert enrolled.exit_code == 0, enrolled.output
    assert json.loads(enrolled.output)["identities"] == 3
    found = run("identify", str(a), "--gallery", str(gallery))
    assert found.exit_code == 0, found.output
    ranked = json.loads(found.output)["candidates"]
    assert len(ranked) == 3 and ranked[0]["score"] >= ranked[-1]["score"]
    g = np.load(gallery)
    assert set(g["names"]) == {a.parent.name, *(p.parent.name for p in photos(faces))}

    missing = CliRunner().invoke(main, ["verify", str(a), str(b), "--model", str(tmp_path)])
    assert missing.exit_code == 1 and "cannot load model" in missing.output
