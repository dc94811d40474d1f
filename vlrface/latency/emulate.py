"""Emulated ARM latency of ONNX models (``latency.source = emulated``).

The model runs under onnxruntime's real aarch64 build (its PyPI wheel) in an aarch64 CPython
(Debian arm64 packages, extracted, no chroot), under Debian's dynamic ``qemu-aarch64``
(``-cpu cortex-a57``, so MLAS/XNNPACK pick A57-class NEON kernels) with ``icount``, a small TCG
plugin (``plugin/icount.c``) that counts executed guest instructions per guest thread.
Instructions, not emulated wall-clock, are the measure: they repeat (below), and
``devices.yaml`` turns them into ms with the same per-device constants as the estimated backend
(docs/arm-latency.md, sources). Only the thread that runs the inference is counted (the
session has one intra-op thread).

The guest runs with onnxruntime's telemetry off (``ORT_DISABLE_TELEMETRY=1``) and an empty
``HOME``. With it on, onnxruntime (1.32) starts a 1DS telemetry thread that sleeps on a timed
wait and keeps a SQLite store in ``~/.cache/Microsoft/DeveloperTools/.onnxruntime``; the
inference thread queues an event per run, and whether that thread has woken up in between
depends on the host's speed. On a loaded host the per-inference count then moved by up to a few
hundred instructions (0.1-0.2 % on a small model).

Per inference: the guest (``plugin/onnx_guest_runner.py``) builds the session, loads one fixed
seeded input and runs it ``WARMUP + COUNTED`` times, with a marker before the first run and after
each run. One inference is the median of the ``COUNTED`` runs after the warm-up ones (the
instructions between consecutive markers): start-up, imports, session building, the first run's
one-off work and the warm-up runs stay out of it. onnxruntime's first runs cost a few hundred
instructions more or less depending on how long the session has existed (single-stepping qemu
changes runs 1-3 and no later one, in 150 runs), and on a heavily loaded host a later run now and
then does too: the median leaves such a run out. So set up, repeated processes agreed to the
instruction in every check (idle, four busy loops on two cores, single-stepped). The output of
the emulated run is compared with onnxruntime on this (x86) host on the same input: the
ARM-vs-x86 parity figures.

Everything is cached under ``~/.cache/vlrface/arm64`` (``VLRFACE_ARM64_CACHE`` overrides):
the plugin, the arm64 sysroot (with fake ``/proc/cpuinfo`` and ``/sys/devices/system/cpu``
files: onnxruntime's cpuinfo crashes on the host's x86 ones) and the aarch64 wheels.
``setup`` is idempotent; each step is redone only if its stamp is missing or stale.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from vlrface.errors import VlrfaceError

PLUGIN_DIR = Path(__file__).with_name("plugin")
PLUGIN_SOURCE = PLUGIN_DIR / "icount.c"
GUEST_RUNNER = PLUGIN_DIR / "onnx_guest_runner.py"

QEMU = "qemu-aarch64"
QEMU_CPU = "cortex-a57"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"  # VLRFACE_DEBIAN_MIRROR overrides
DEBIAN_SUITE = "bookworm"  # its python3.11 matches the cp311 wheels below
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
GUEST_PYTHON = "usr/bin/python3.11"
GUEST_PY_TAG = ("3.11", "cp311")
# an aarch64 CPython 3.11 and the shared libraries numpy and onnxruntime's wheels need
DEBIAN_PACKAGES = (
    "libc6 libgcc-s1 libstdc++6 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib "
    "libexpat1 zlib1g libssl3 libffi8 libbz2-1.0 liblzma5 libsqlite3-0 libncursesw6 libtinfo6 "
    "libreadline8 libuuid1 libcrypt1 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 "
    "libkrb5support0 libcom-err2 libkeyutils1 libdb5.3 media-types"
).split()
WHEEL_PLATFORMS = ["manylinux2014_aarch64"] + [
    f"manylinux_2_{minor}_aarch64" for minor in (17, 24, 26, 27, 28, 31, 34, 35, 36)
]
DEFAULT_VERSIONS = {"onnxruntime": "1.32.0", "numpy": "1.26.4"}
WARMUP = 3  # runs before the counted ones (their counts depend on timing)
COUNTED = 5
RUNS = WARMUP + COUNTED
FAKE_CPUINFO = """processor\t: 0
BogoMIPS\t: 38.40
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd07
CPU revision\t: 1

"""
_LINE = re.compile(r"^(mark|total)\s+(?:(\d+)\s+)?(\d+)\s*$")

Log = Callable[[str], None]


class EmulationError(VlrfaceError):
    """The emulated ARM backend cannot run: a missing tool, no network, or a failed guest run."""


def _stderr_log(message: str) -> None:
    print(f"[arm64 emulation] {message}", file=sys.stderr, flush=True)


def debian_mirror() -> str:
    """The Debian archive the arm64 packages come from (``$VLRFACE_DEBIAN_MIRROR`` overrides)."""
    return os.environ.get("VLRFACE_DEBIAN_MIRROR") or DEFAULT_DEBIAN_MIRROR


def cache_dir() -> Path:
    """The emulation cache: ``$VLRFACE_ARM64_CACHE`` or ``~/.cache/vlrface/arm64``."""
    env = os.environ.get("VLRFACE_ARM64_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlrface" / "arm64"


# ------------------------------------------------------------------------------------------------
# pure parts: plugin output, instruction differencing, ms conversion, input checks


def parse_plugin_output(text: str, source: str = "icount") -> dict:
    """``{"marks": {id: count}, "total": count}`` from the plugin's ``mark``/``total`` lines."""
    marks: dict[int, int] = {}
    total = None
    for raw in text.splitlines():
        if not raw.strip():
            continue
        found = _LINE.match(raw.strip())
        if not found:
            raise EmulationError(f"{source}: unexpected plugin output line {raw.strip()!r}")
        kind, marker, count = found.groups()
        if kind == "total":
            total = int(count)
        elif marker is None:
            raise EmulationError(f"{source}: mark line without a marker id: {raw.strip()!r}")
        else:
            marks[int(marker)] = int(count)
    if total is None:
        raise EmulationError(f"{source}: no 'total' line (the emulated process did not exit)")
    return {"marks": marks, "total": total}


def per_inference(marks: dict[int, int], warmup: int = WARMUP, counted: int = COUNTED) -> dict:
    """Instructions of one inference: the median of runs ``warmup + 1 .. warmup + counted``
    (the instructions from the marker after the run before to the marker after it), with their
    ``min`` and ``max``, and ``count_1``, the first run with its one-off work."""
    if warmup < 1 or counted < 1:
        raise ValueError("needs at least one warm-up and one counted run")
    missing = [m for m in range(warmup + counted + 1) if m not in marks]
    if missing:
        raise EmulationError(f"plugin output has no marker(s) {missing}: the guest run stopped")
    runs = [marks[i + 1] - marks[i] for i in range(warmup, warmup + counted)]
    if min(runs) <= 0:
        raise EmulationError(f"instruction counts do not grow with runs: {runs}")
    return {
        "count_1": marks[1] - marks[0],
        "warmup": warmup,
        "counted": runs,
        "min": min(runs),
        "max": max(runs),
        "per_inference": float(np.median(runs)),
    }


def to_ms(instructions: float, device: str, table: dict | None = None) -> float:
    """Milliseconds of ``instructions`` on ``device`` (its ``ms_per_minsn`` in devices.yaml)."""
    if table is None:
        from vlrface.latency.estimate import devices

        table = devices()
    if device not in table:
        raise ValueError(f"unknown device {device!r}; known: {sorted(table)}")
    return instructions / 1e6 * float(table[device]["ms_per_minsn"])


def check_model_path(path: str | Path) -> Path:
    """The ONNX file to emulate; other formats get one line saying why they cannot be."""
    path = Path(path)
    if path.suffix == ".tflite":
        raise EmulationError(
            f"{path}: an LCE flatbuffer runs under LCE's aarch64 benchmark binary "
            "(emulate_lce: --benchmark-binary and --sysroot), not onnxruntime"
        )
    if path.suffix != ".onnx":
        raise EmulationError(f"{path}: expected an .onnx model")
    if not path.is_file():
        raise EmulationError(f"{path}: no such file")
    return path


def find_qemu() -> str:
    """The dynamic ``qemu-aarch64`` (the static one has no plugin support)."""
    found = shutil.which(QEMU)
    if not found:
        raise EmulationError(
            f"{QEMU} not found on PATH: apt-get install qemu-user "
            "(qemu-user-static cannot load the instruction-count plugin)"
        )
    return found


def _find_tool(name: str, hint: str) -> str:
    found = shutil.which(name)
    if not found:
        raise EmulationError(f"{name} not found on PATH: {hint}")
    return found


def wheel_versions() -> dict[str, str]:
    """onnxruntime and numpy versions for the guest: this host's, so parity compares like with
    like; the defaults where one is not installed."""
    out = {}
    for name, default in DEFAULT_VERSIONS.items():
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = default
    return out


# ------------------------------------------------------------------------------------------------
# setup: plugin, sysroot, wheels


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure raise naming ``what`` and the last lines of its output."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-2:]
        raise EmulationError(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")
    return done


def _stamp_ok(directory: Path, key: str) -> bool:
    stamp = directory / ".vlrface-complete"
    return stamp.is_file() and stamp.read_text() == key


def _write_stamp(directory: Path, key: str) -> None:
    (directory / ".vlrface-complete").write_text(key)


def _fresh(target: Path) -> Path:
    """An empty staging directory beside ``target``, renamed onto it by ``_commit``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))


def _commit(staging: Path, target: Path, key: str) -> Path:
    _write_stamp(staging, key)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def build_plugin(cache: Path, log: Log = _stderr_log) -> Path:
    """``libicount.so`` compiled from ``plugin/icount.c`` (rebuilt when the source changes)."""
    source = PLUGIN_SOURCE.read_bytes()
    lib = cache / "plugin" / f"libicount-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if lib.is_file():
        return lib
    gcc = _find_tool("gcc", "apt-get install gcc (it compiles the instruction-count plugin)")
    log(f"compiling {PLUGIN_SOURCE.name} -> {lib}")
    lib.parent.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_suffix(".tmp")
    _run([gcc, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(PLUGIN_SOURCE)], "gcc icount.c")
    for old in lib.parent.glob("libicount-*.so"):  # builds of earlier sources
        old.unlink()
    tmp.rename(lib)
    return lib


def _apt_options(apt: Path) -> list[str]:
    """apt-get options for a private arm64 package index under ``apt`` (host apt untouched)."""
    return [
        "-o", f"Dir::State={apt / 'state'}",
        "-o", f"Dir::State::Lists={apt / 'lists'}",
        "-o", f"Dir::State::status={apt / 'state' / 'status'}",
        "-o", f"Dir::Cache={apt / 'cache'}",
        "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
        "-o", f"Dir::Etc::Preferences={apt / 'preferences'}",
        "-o", f"Dir::Etc::PreferencesParts={apt / 'preferences.d'}",
        "-o", "APT::Architecture=arm64",
        "-o", "APT::Architectures::=arm64",
        "-o", "APT::Sandbox::User=root",  # a private cache the _apt user could not write
        "-o", "Debug::NoLocking=1",
        "-q",
    ]  # fmt: skip


def _prepare_apt(apt: Path, mirror: str) -> list[str]:
    """The private apt directories and sources list; the apt-get options that use them."""
    if not Path(DEBIAN_KEYRING).is_file():
        raise EmulationError(
            f"{DEBIAN_KEYRING} not found: apt-get install debian-archive-keyring "
            "(it verifies the Debian arm64 packages)"
        )
    for sub in ("state", "lists/partial", "cache/archives/partial", "sources.list.d",
                "preferences.d"):  # fmt: skip
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "state" / "status").touch()
    opts = f"[arch=arm64 signed-by={DEBIAN_KEYRING}]"
    (apt / "sources.list").write_text(
        f"deb {opts} {mirror} {DEBIAN_SUITE} main\n"
        f"deb {opts} {mirror} {DEBIAN_SUITE}-updates main\n"
    )
    return _apt_options(apt)


def _fake_cpu_files(root: Path) -> None:
    """A Cortex-A57 ``/proc/cpuinfo`` and one-CPU ``/sys`` files inside the sysroot."""
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(FAKE_CPUINFO)
    cpu = root / "sys" / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (cpu / name).write_text("0\n")


def _apt_update(apt_get: str, opts: list[str], mirror: str) -> None:
    """Refresh the private arm64 index; a failed fetch is an error naming the mirror."""
    done = subprocess.run([apt_get, *opts, "update"], capture_output=True, text=True)
    if done.returncode != 0 or re.search(r"^(E:|W: Failed to fetch)", done.stderr, re.M):
        tail = " | ".join((done.stderr.strip() or done.stdout.strip()).splitlines()[-2:])
        raise EmulationError(f"cannot reach Debian at {mirror} (apt-get update): {tail}")


def _extract_debs(debs: list[Path], staging: Path) -> None:
    dpkg_deb = _find_tool("dpkg-deb", "apt-get install dpkg")
    for deb in debs:
        _run([dpkg_deb, "-x", str(deb), str(staging)], f"dpkg-deb -x {deb.name}")
    if not (staging / GUEST_PYTHON).is_file():
        raise EmulationError(f"{staging / GUEST_PYTHON}: not in the extracted packages")
    _fake_cpu_files(staging)


def build_sysroot(cache: Path, log: Log = _stderr_log) -> Path:
    """An arm64 CPython 3.11 sysroot from Debian's .debs (apt-get download, dpkg-deb -x)."""
    target = cache / "sysroot"
    mirror = debian_mirror()
    key = f"{mirror} {DEBIAN_SUITE} {' '.join(DEBIAN_PACKAGES)}"
    if _stamp_ok(target, key):
        return target
    apt_get = _find_tool("apt-get", "the arm64 sysroot is built from Debian packages")
    opts = _prepare_apt(cache / "apt", mirror)
    log(f"updating the private arm64 package index ({mirror} {DEBIAN_SUITE})")
    _apt_update(apt_get, opts, mirror)
    staging = _fresh(target)
    try:
        with tempfile.TemporaryDirectory(prefix=".debs-", dir=cache) as debs:
            log(f"downloading {len(DEBIAN_PACKAGES)} arm64 .debs from {mirror}")
            _run([apt_get, *opts, "download", *DEBIAN_PACKAGES], "apt-get download", cwd=debs)
            files = sorted(Path(debs).glob("*.deb"))
            log(f"extracting {len(files)} .debs into {target}")
            _extract_debs(files, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _commit(staging, target, key)


def install_wheels(cache: Path, versions: dict[str, str], log: Log = _stderr_log) -> Path:
    """numpy and onnxruntime aarch64 wheels from PyPI, into a ``--target`` site directory."""
    reqs = [f"{name}=={version}" for name, version in sorted(versions.items())]
    target = cache / "site"
    key = " ".join([*reqs, *WHEEL_PLATFORMS])
    if _stamp_ok(target, key):
        return target
    staging = _fresh(target)
    log(f"installing {' '.join(reqs)} (aarch64 wheels, PyPI) into {target}")
    plats = [arg for plat in WHEEL_PLATFORMS for arg in ("--platform", plat)]
    pyver, abi = GUEST_PY_TAG
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-deps", "--only-binary=:all:", *plats, "--python-version", pyver,
           "--implementation", "cp", "--abi", abi, "--target", str(staging), *reqs]  # fmt: skip
    try:
        _run(cmd, f"pip install {' '.join(reqs)} for aarch64 (is PyPI reachable?)")
    except EmulationError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _commit(staging, target, key)


def setup(cache: Path | None = None, log: Log = _stderr_log) -> dict:
    """Make the toolchain ready (idempotent): qemu check, plugin, sysroot, wheels."""
    cache = cache or cache_dir()
    qemu = find_qemu()
    cache.mkdir(parents=True, exist_ok=True)
    versions = wheel_versions()
    plugin = build_plugin(cache, log)
    sysroot = build_sysroot(cache, log)
    site = install_wheels(cache, versions, log)
    return {
        "qemu": qemu,
        "plugin": plugin,
        "sysroot": sysroot,
        "site": site,
        "versions": versions,
    }


# ------------------------------------------------------------------------------------------------
# running


def fixed_input(model: str | Path, seed: int = 0) -> np.ndarray:
    """The seeded standard-normal float32 input of ``model``'s first input, batch (and any
    other dynamic axis) 1."""
    import onnx

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: one line for the user
        raise EmulationError(f"{model}: not a readable ONNX model ({exc})") from None
    inits = {t.name for t in proto.graph.initializer}
    graph_in = next(i for i in proto.graph.input if i.name not in inits)
    if graph_in.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise EmulationError(f"{model}: input {graph_in.name!r} is not float32; a face model's is")
    dims = graph_in.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _guest_env(site: Path, home: Path) -> dict[str, str]:
    """The guest's whole environment (qemu-user passes its own): nothing from this host's
    Python, one BLAS thread, a fixed hash seed, no onnxruntime telemetry (its thread makes the
    counts timing-dependent) and ``home``, an empty directory, as ``HOME``."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "ORT_DISABLE_TELEMETRY": "1",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(site),
        "PYTHONHASHSEED": "0",
        "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }


def run_guest(
    model: Path, x: np.ndarray, tools: dict, runs: int = RUNS, qemu_args: tuple[str, ...] = ()
) -> dict:
    """One emulated process: ``runs`` inferences of ``x``; the plugin's counts and the output.
    ``qemu_args`` go to qemu-aarch64 as they are (``-singlestep`` slows the guest several times
    over without changing what it executes)."""
    with tempfile.TemporaryDirectory(prefix="vlrface-arm64-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "input.npy", x)
        counts = tmp / "icount.txt"
        cmd = [
            str(tools["qemu"]), "-cpu", QEMU_CPU, *qemu_args, "-L", str(tools["sysroot"]),
            "-plugin", f"{tools['plugin']},out={counts}",
            str(Path(tools["sysroot"]) / GUEST_PYTHON), "-s", str(GUEST_RUNNER),
            str(model.resolve()), str(tmp / "input.npy"), str(tmp / "output.npy"), str(runs),
        ]  # fmt: skip
        (tmp / "home").mkdir()
        start = time.perf_counter()
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=_guest_env(Path(tools["site"]), tmp / "home")
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            tail = " | ".join((done.stderr.strip() or done.stdout.strip()).splitlines()[-3:])
            raise EmulationError(
                f"{model}: emulated onnxruntime run failed (exit {done.returncode}): {tail}"
            )
        parsed = parse_plugin_output(counts.read_text(), str(counts))
        found = re.search(r"wall_s ([0-9.]+)", done.stdout)
        return {
            **parsed,
            "output": np.load(tmp / "output.npy"),
            "process_wall_s": wall,
            "emulated_run_s": float(found.group(1)) / runs if found else None,
        }


def x86_output(model: Path, x: np.ndarray) -> np.ndarray:
    """The same inference with onnxruntime on this host, one thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0])


def parity(arm: np.ndarray, x86: np.ndarray) -> dict:
    """Max abs diff and cosine (per row: min) of the ARM and x86 outputs
    (``vlrface.export.parity.agreement``)."""
    from vlrface.export.parity import agreement

    try:
        figures = agreement(arm, x86)
    except ValueError as exc:
        raise EmulationError(f"ARM vs x86: {exc}") from None
    return {"max_abs_diff": figures["max_abs_diff"], "cosine": figures["cosine_min"]}


def emulate(
    model: str | Path,
    devices_: list[str] | tuple[str, ...],
    seed: int = 0,
    cache: Path | None = None,
    log: Log = _stderr_log,
) -> dict:
    """Emulated single-thread ARM latency of an ONNX model on each of ``devices_``.

    Returns the estimated backend's shape (``latency.source``, ``latency.<device>.ms``) plus
    ``instructions`` (per inference), the differencing counts, the ARM-vs-x86 ``parity`` and
    provenance (qemu CPU, onnxruntime version, device constants).
    """
    from vlrface.latency.estimate import devices

    path = check_model_path(model)
    table = devices()
    unknown = sorted(set(devices_) - set(table))
    if unknown:
        raise ValueError(f"unknown device(s) {unknown}; known: {sorted(table)}")
    tools = setup(cache, log)
    x = fixed_input(path, seed)
    log(
        f"running {path.name} under {QEMU} -cpu {QEMU_CPU}"
        f" ({WARMUP} warm-up + {COUNTED} counted inferences)"
    )
    guest = run_guest(path, x, tools)
    counts = per_inference(guest["marks"])
    insns = counts["per_inference"]
    payload = {"model": str(model), "latency.source": "emulated"}
    details = {}
    for device in devices_:
        payload[f"latency.{device}.ms"] = to_ms(insns, device, table)
        details[device] = {
            "ms": payload[f"latency.{device}.ms"],
            "source": "emulated",
            "ms_per_minsn": float(table[device]["ms_per_minsn"]),
            "device_source": table[device]["source"],
        }
    return {
        **payload,
        "instructions": insns,
        "counts": {**counts, "process_total": guest["total"]},
        "parity": parity(guest["output"], x86_output(path, x)),
        "method": (
            f"onnxruntime {tools['versions']['onnxruntime']} aarch64 under {QEMU} -cpu {QEMU_CPU},"
            " guest instructions per inference (icount plugin) x device ms per M-instruction"
        ),
        "input_seed": seed,
        "emulated_wall_s_per_run": guest["emulated_run_s"],
        "process_wall_s": guest["process_wall_s"],
        "host": platform.machine(),
        "details": details,
    }
