"""Test session isolation: ZenML, MLflow and DVC state live in a temp dir, never the user's."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pytest_configure(config):
    # Before anything imports zenml, mlflow or tensorflow.
    tmp = Path(tempfile.mkdtemp(prefix="vlrface-tests-"))
    (tmp / "repo" / ".zen").mkdir(parents=True)
    env = {
        "ZENML_CONFIG_PATH": str(tmp / "zenml"),
        "ZENML_REPOSITORY_PATH": str(tmp / "repo"),
        "ZENML_CUSTOM_SOURCE_ROOT": str(ROOT),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_ENABLE_RICH_TRACEBACK": "false",
        "ZENML_LOGGING_VERBOSITY": "WARN",
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "GX_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}",
        # ZenML's tracker rewrites and pops MLFLOW_TRACKING_URI around each step: keep a copy
        "VLRFACE_TEST_MLFLOW_URI": f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}",
        "VLRFACE_TEST_TMP": str(tmp),
    }
    os.environ.update(env)
    config._vlrface_tmp = tmp


def pytest_unconfigure(config):
    tmp = getattr(config, "_vlrface_tmp", None)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _mlflow_uri_per_test():
    """``mlflow.set_tracking_uri`` (ZenML's tracker calls it in each step) is process-global and
    outranks MLFLOW_TRACKING_URI: reset it after every test, so the next test's environment
    (the session store, or its own monkeypatched one) decides which store it reads."""
    yield
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if utils is not None:
        utils._tracking_uri = None
    os.environ["MLFLOW_TRACKING_URI"] = os.environ["VLRFACE_TEST_MLFLOW_URI"]


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return Path(os.environ["VLRFACE_TEST_TMP"])


def dvc(*args: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, check=True, capture_output=True, text=True
    )


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED
