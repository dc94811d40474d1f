"""Where a model came from: git state, package versions, a hash of its configuration."""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "vlrface",
    "tensorflow",
    "tf-keras",
    "larq",
    "larq-compute-engine",
    "zenml",
    "mlflow",
    "great-expectations",
    "dvc",
    "numpy",
    "opencv-python-headless",
    "torch",
    "onnx",
    "onnxruntime",
)


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(cwd: str | Path = ".") -> dict:
    """``{"git_sha", "git_dirty"}``; ``"unknown"`` outside a git checkout."""
    cwd = Path(cwd)
    sha = _git("rev-parse", "HEAD", cwd=cwd)
    if sha is None:
        return {"git_sha": "unknown", "git_dirty": "unknown"}
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return {"git_sha": sha, "git_dirty": str(bool(status)).lower()}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def config_hash(config: dict) -> str:
    """sha256 of the configuration as canonical JSON (sorted keys)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


PACKAGE_ROOT = Path(__file__).resolve().parent
CODE_SUFFIXES = (".py", ".yaml", ".json")


def code_hash(*parts: str, root: Path = PACKAGE_ROOT) -> str:
    """sha256 over the source files of ``parts`` of this package (``"training.py"``,
    ``"models"``: a folder counts every ``.py``/``.yaml``/``.json`` file under it), keyed by
    their paths relative to the package, so it is the same on every machine. A missing part
    is an error: a renamed module must not silently drop out of a cache key."""
    h = hashlib.sha256()
    for part in sorted(parts):
        path = root / part
        if not path.exists():
            raise FileNotFoundError(f"{path}: not part of the vlrface package")
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in files:
            if f.suffix in CODE_SUFFIXES and "__pycache__" not in f.parts:
                h.update(f.relative_to(root).as_posix().encode() + b"\0")
                h.update(f.read_bytes() + b"\0")
    return h.hexdigest()
