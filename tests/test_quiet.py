"""Runs print what a user can act on (``vlrface.logs``, ``vlrface.progress``): the libraries'
known noise is dropped at its source, anything else still shows."""

import io
import logging
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "PYTHONPATH": str(ROOT)}


def test_efficiency_prints_its_answer_only():
    out = subprocess.run(
        [sys.executable, "-m", "vlrface", "efficiency", "binaryfacenet"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("model: binaryfacenet")
    assert out.stderr == "", out.stderr[-2000:]


def test_native_filter_drops_known_lines_and_keeps_the_rest():
    """C++ lines written to file descriptor 2: the three CUDA-factory errors and XLA's absl
    start-up lines go, a real error in between stays, in order."""
    code = textwrap.dedent(
        """
        import os
        from vlrface.logs import native_stderr_filtered
        with native_stderr_filtered():
            os.write(2, b"E0000 cuda_fft.cc:479] Unable to register cuFFT factory: "
                        b"Attempting to register factory for plugin cuFFT when one has\\n")
            os.write(2, b"E0000 something.cc:1] a real error\\n")
            os.write(2, b"2026-12-05 10:47:29.450569: E tensorflow/core/grappler/optimizers/"
                        b"meta_optimizer.cc:961] remapper failed: INVALID_ARGUMENT: Mutation::"
                        b"Apply error: fanout 'binaryfacenet/p_re_lu_9/Relu_1/unary_ops_"
                        b"composition' exist for missing node 'binaryfacenet/add_1/add'.\\n")
            os.write(2, b"E0000 meta_optimizer.cc:961] remapper failed: another reason\\n")
            os.write(2, b"I0000 00:00:1.2  30874 device_compiler.h:188] Compiled cluster "
                        b"using XLA!  This line is logged at most once\\n")
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called "
                        b"are written to STDERR\\n")
            os.write(2, b"the end\\n")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == (
        "E0000 something.cc:1] a real error\n"
        "E0000 meta_optimizer.cc:961] remapper failed: another reason\nthe end\n"
    )


def test_log_filters_match_one_message_each():
    import vlrface  # noqa: F401 - installs the filters

    def shown(logger: str, message: str) -> bool:
        record = logging.LogRecord(logger, logging.WARNING, "", 0, message, (), None)
        return logging.getLogger(logger).filter(record)

    autograph = "AutoGraph could not transform <bound method QuantizedVariable.from_variable of x>"
    assert not shown("tensorflow", autograph)
    assert shown("tensorflow", "AutoGraph could not transform <function my_step> and will run")
    tracker = "zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker"
    assert not shown(tracker, "Failed to disable MLflow autologging for the following "
                     "frameworks: ['fastai'].")  # fmt: skip
    # numpy is installed: failing to disable its autologging would be news
    assert shown(tracker, "Failed to disable MLflow autologging for the following frameworks: "
                 "['numpy'].")  # fmt: skip


def test_progress_is_a_line_per_update_off_a_terminal(monkeypatch):
    from vlrface import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    stream = io.StringIO()
    bar = progress.tqdm(range(3), desc="epoch 1/1", file=stream, mininterval=0)
    for i in bar:
        bar.set_postfix(loss=i)
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) >= 3 and all(line.startswith("epoch 1/1:") for line in lines)
    assert "3/3" in lines[-1]


def test_nested_progress_writes_no_cursor_moves_to_a_log():
    """evaluation's per-protocol bar holds a nested bar per protocol: tqdm moves the cursor up
    to redraw the outer one, which in a log was a line of its own (empty once rendered)."""
    from vlrface import progress

    stream = io.StringIO()
    for _ in progress.tqdm(range(2), desc="protocols", file=stream):
        for _ in progress.tqdm(range(3), desc="eval lfw", file=stream, mininterval=0):
            pass
    lines = stream.getvalue().splitlines()
    assert lines and all(line.startswith(("protocols:", "eval lfw:")) for line in lines), lines


@pytest.mark.parametrize("counting", ["iterator", "update"])
def test_progress_lines_show_the_count_and_postfix_they_print_at(monkeypatch, counting):
    """Off a terminal (a log) a 40-step loop of 1 s steps prints a line per 15 s: each shows
    the steps done and the postfix set at that step (a training loop's loss), whether the bar
    counts as the loop's iterator (Keras) or by ``update`` after the postfix (PyTorch). tqdm's
    iterator keeps its count to itself between lines: a line printed by ``set_postfix`` showed
    ``0/40 ... loss=1``, and later ones a count 15 steps old."""
    import tqdm.std

    from vlrface import progress

    clock = [time.time()]  # a fake clock from now: tqdm's monitor thread (real time) stays idle
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])
    stream = io.StringIO()
    steps = range(40) if counting == "iterator" else None
    bar = progress.tqdm(steps, total=40, desc="epoch 1/1", file=stream)

    def step(i: int) -> None:
        clock[0] += 1.0
        bar.set_postfix(loss=f"{i + 1}")  # step i + 1's figure

    if counting == "iterator":
        for i in bar:
            step(i)
    else:
        for i in range(40):
            step(i)
            bar.update(1)
        bar.close()
    lines = stream.getvalue().splitlines()
    shown = [re.search(r" (\d+)/40 .*loss=(\d+)", line) for line in lines]
    shown = [(int(m[1]), int(m[2])) for m in shown if m]
    assert len(shown) >= 3 and shown[-1] == (40, 40), lines  # two on the way, and the last
    assert all(done == loss for done, loss in shown), lines


def test_load_pretrained_describes_its_empty_centres():
    """``load_pretrained`` returns empty centres (a new head for the fine-tune classes). The
    materializer its step names for them (else ZenML's default for arrays) saves, loads and
    describes an empty array: ZenML's numpy materializer reduces min/max over no values, and
    ZenML logs "Failed to extract materializer metadata" after the step."""
    import numpy as np
    from zenml.client import Client
    from zenml.integrations.registry import integration_registry
    from zenml.materializers.materializer_registry import materializer_registry
    from zenml.utils import source_utils

    import steps

    output = steps.load_pretrained.configuration.outputs.get("pretrain_centres")
    sources = output.materializer_source if output is not None else None
    if sources:
        cls = source_utils.load(sources[0])
    else:  # what a pipeline run picks: its integrations (numpy's) are active
        integration_registry.activate_integrations()
        cls = materializer_registry[np.ndarray]
    empty = np.zeros((0, 0), np.float32)
    store = Client().active_stack.artifact_store
    materializer = cls(uri=f"{store.path}/empty_centres", artifact_store=store)
    store.makedirs(materializer.uri)
    materializer.save(empty)
    assert materializer.extract_full_metadata(empty)["shape"] == (0, 0)
    assert materializer.save_visualizations(empty) == {}
    assert materializer.load(np.ndarray).shape == (0, 0)
    # a non-empty array keeps ZenML's figures
    values = materializer.extract_metadata(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert (values["shape"], values["min"], values["max"]) == ((2, 3), 0.0, 5.0)


# a process's first XLA compile prints XLA's absl lines (Keras XLA-compiles grouped convolutions
# on a CPU): each place that first runs a Keras model, in a fresh process of its own
FIRST_KERAS_RUN = {
    "import_checkpoint": """
        from types import SimpleNamespace
        from vlrface.models.keras.binaryfacenet import BinaryFaceNetConfig, build_binaryfacenet
        from vlrface.models.keras.checkpoint import import_checkpoint
        build_binaryfacenet(BinaryFaceNetConfig(channels=16)).save(f"{tmp}/ref.h5")
        cfg = SimpleNamespace(channels=16, embedding=128, k_bits=BinaryFaceNetConfig().k_bits)
        import_checkpoint(f"{tmp}/ref.h5", faces, model_cfg=cfg)
    """,
    "embedder": """
        from vlrface.embedders import KerasEmbedder
        KerasEmbedder(model)(faces)
    """,
    "embedding_table": """
        import cv2
        from vlrface.training.keras import embedding_table
        for i in range(2):
            cv2.imwrite(f"{tmp}/{i}.png", (faces[i] * 60 + 128).clip(0, 255).astype("uint8"))
        embedding_table(model, tmp, ["0.png", "1.png"], 112, True, desc="embed")
    """,
}


@pytest.mark.parametrize("place", sorted(FIRST_KERAS_RUN))
def test_first_keras_run_prints_no_xla_lines(place, tmp_path):
    """``load_pretrained`` (the checkpoint import), evaluation, export parity and the CLI
    (``KerasEmbedder``), the teacher cache and head init (``embedding_table``): the first run
    of a model with a grouped convolution prints nothing of XLA's; other output stays."""
    code = (
        textwrap.dedent(
            """
        import sys
        import numpy as np
        from vlrface._keras import tf
        tmp = sys.argv[1]
        faces = np.random.default_rng(0).normal(size=(2, 112, 112, 3)).astype("float32")
        model = tf.keras.Sequential([
            tf.keras.Input((112, 112, 3)),
            tf.keras.layers.Conv2D(4, 1),
            tf.keras.layers.Conv2D(4, 3, groups=2),  # XLA-compiled on a CPU
            tf.keras.layers.GlobalAveragePooling2D(),
        ])
        """
        )
        + textwrap.dedent(FIRST_KERAS_RUN[place])
        + "print('done', file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "XLA" not in out.stderr and "StreamExecutor" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.rstrip().endswith("done")
