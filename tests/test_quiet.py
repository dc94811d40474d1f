"""Runs print what a user can act on (``vlrface.logs``, ``vlrface.progress``): the libraries'
known noise is dropped at its source, anything else still shows."""

import io
import logging
import os
import subprocess
import sys
import textwrap

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
    assert out.stderr == "E0000 something.cc:1] a real error\nthe end\n"


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
