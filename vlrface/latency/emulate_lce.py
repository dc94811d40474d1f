"""Emulated ARM latency of LCE flatbuffers (``latency.source = emulated``): LCE's real aarch64
kernels, counted under qemu-user.

The model runs under an aarch64 build of LCE's ``lce_benchmark_model``: LCE's official
``lce_benchmark_model_aarch64`` release binary on a user's machine, or the development bundle
``shared/tools/lce-aarch64`` here and in CI (LCE's kernels with the official tool's command line;
the project never copies it). It runs under Debian's dynamic ``qemu-aarch64 -cpu cortex-a57``
with ``-L <sysroot>`` (the binary's shared libraries) and the project's instruction-counting
plugin (``plugin/icount.c``, the one the ONNX backend ``emulate`` uses).

Per inference = (count with ``--num_runs=3`` - count with ``--num_runs=1``) / 2, both with one
warm-up inference and ``--min_secs=0 --warmup_min_secs=0``, so exactly 2 and 4 inferences run;
start-up, model load and one-time weight packing cancel out. The count is read at the runner's
end-of-runs marker where it sets one (the bundle's runner, marker 0 with the constant
``"lcea"``), otherwise at process exit (the official tool: its final summary then adds a few
thousand instructions, under 0.1 % of a face model). ``devices.yaml`` turns instructions into
milliseconds, as for the other backends. The figure carries the binary's sha256.

Every way this can fail is one ``EmulationError`` line: no qemu, a binary that is not an aarch64
ELF executable, a sysroot without the ELF interpreter or a library the binary needs, an op the
binary cannot resolve, a crash under emulation.
"""

from __future__ import annotations

import platform
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from vlrface.latency.emulate import (
    QEMU,
    QEMU_CPU,
    EmulationError,
    Log,
    _stderr_log,
    build_plugin,
    cache_dir,
    find_qemu,
    parse_plugin_output,
    to_ms,
)
from vlrface.latency.measure import benchmark_summary
from vlrface.provenance import sha256_file

LCE_MARK_MAGIC = 0x6C636561  # "lcea": the bundle runner's end-of-runs marker (id 0)
RUNS = (1, 3)
EM_AARCH64 = 183
_ELF_MACHINES = {3: "x86 (i386)", 40: "arm (32-bit)", 62: "x86-64", 183: "aarch64", 243: "riscv"}
_MISSING_LIB = re.compile(r"error while loading shared libraries: ([^:\s]+)")
_NO_INTERP = re.compile(r"Could not open '([^']+)'")
_UNRESOLVED = re.compile(
    r"(unresolved custom op:?\s*([\w.-]+)|Didn't find (?:custom )?op for (?:builtin opcode|name)"
    r"\s*'([^']+)'(?: version '(\d+)')?)"
)
_QEMU_SIGNAL = re.compile(r"uncaught target signal (\d+) \(([^)]+)\)")


def check_binary(binary: str | Path) -> Path:
    """The benchmark binary, checked to be an aarch64 ELF executable (one line otherwise)."""
    path = Path(binary)
    if not path.is_file():
        raise EmulationError(f"{path}: LCE benchmark binary not found (latency.benchmark_binary)")
    with path.open("rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        raise EmulationError(f"{path}: not an ELF executable; expected an aarch64 build")
    order = "little" if head[5:6] == b"\x01" else "big"
    machine = int.from_bytes(head[18:20], order)
    if head[4:5] != b"\x02" or machine != EM_AARCH64:
        name = _ELF_MACHINES.get(machine, f"machine {machine}")
        bits = "64" if head[4:5] == b"\x02" else "32"
        raise EmulationError(f"{path}: a {bits}-bit {name} executable, not aarch64")
    return path


def check_sysroot(sysroot: str | Path | None) -> Path | None:
    """The sysroot for ``qemu -L`` (None: the binary needs none, e.g. a static build)."""
    if sysroot is None:
        return None
    path = Path(sysroot)
    if not path.is_dir():
        raise EmulationError(f"{path}: sysroot directory not found (latency.sysroot, qemu -L)")
    return path


def failure_line(
    stderr: str, returncode: int, binary: Path, sysroot: Path | None, model: Path, stdout: str = ""
) -> str:
    """One line saying why an emulated run failed, from its stderr and exit status."""
    text = f"{stdout}\n{stderr}"
    sysroot = sysroot or "(none configured: latency.sysroot)"
    if found := _NO_INTERP.search(stderr):
        return f"sysroot {sysroot} lacks {found.group(1)}, the ELF interpreter {binary.name} needs"
    if found := _MISSING_LIB.search(stderr):
        return f"sysroot {sysroot} lacks {found.group(1)}, which {binary.name} needs"
    if found := _UNRESOLVED.search(text):
        op = found.group(2) or found.group(3)
        version = f" (version {found.group(4)})" if found.group(4) else ""
        return f"{model}: {binary.name} cannot resolve op {op}{version}"
    sig = _QEMU_SIGNAL.search(stderr)
    if sig or returncode < 0 or returncode >= 128:
        if sig:
            what = f"signal {sig.group(1)} ({sig.group(2)})"
        else:
            number = -returncode if returncode < 0 else returncode - 128
            try:
                what = f"signal {number} ({signal.Signals(number).name})"
            except ValueError:
                what = f"signal {number}"
        return f"{model}: {binary.name} crashed under emulation: {what}"
    errors = re.findall(r"^ERROR:\s*(.+?)\s*$", text, re.M)
    if errors:
        return f"{model}: {binary.name} failed (exit {returncode}): {errors[0]}"
    tail = (stderr.strip() or stdout.strip()).splitlines()[-1:] or ["no output"]
    return f"{model}: {binary.name} failed under {QEMU} (exit {returncode}): {tail[0]}"


def command(
    qemu: str, plugin: Path, counts: Path, binary: Path, sysroot: Path | None, model: Path,
    runs: int, cpu: str = QEMU_CPU,
) -> list[str]:  # fmt: skip
    """The qemu command line of one counted run: LCE's benchmark flags, 1 warm-up + ``runs``."""
    root = ["-L", str(sysroot)] if sysroot else []
    return [
        qemu, "-cpu", cpu, *root,
        "-plugin", f"{plugin},out={counts},magic={LCE_MARK_MAGIC:x}",
        str(binary), f"--graph={model}", "--num_threads=1", "--warmup_runs=1",
        "--warmup_min_secs=0", f"--num_runs={runs}", "--min_secs=0", "--max_secs=1e9",
    ]  # fmt: skip


def counted_run(
    binary: Path, sysroot: Path | None, model: Path, runs: int, tools: dict, cpu: str = QEMU_CPU
) -> dict:
    """One emulated benchmark process; its instruction count (end-of-runs marker, else exit)."""
    with tempfile.TemporaryDirectory(prefix="vlrface-lce-") as tmp:
        counts = Path(tmp, "icount.txt")
        cmd = command(tools["qemu"], tools["plugin"], counts, binary, sysroot, model, runs, cpu)
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        except subprocess.TimeoutExpired:
            raise EmulationError(f"{model}: {binary.name} ran over an hour under {QEMU}") from None
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise EmulationError(
                failure_line(done.stderr, done.returncode, binary, sysroot, model, done.stdout)
            )
        if not counts.is_file():
            raise EmulationError(f"{QEMU} wrote no instruction counts: is the plugin loadable?")
        parsed = parse_plugin_output(counts.read_text(), str(counts))
    summary = benchmark_summary(done.stdout + done.stderr, binary.name)
    if summary["counts"] and summary["counts"][-1] != runs:
        raise EmulationError(
            f"{model}: {binary.name} ran {summary['counts']} inferences, not 1 warm-up + {runs}"
        )
    marker = parsed["marks"].get(0)
    found = re.search(r"checksum=(\S+)", done.stdout)
    return {
        "count": marker if marker is not None else parsed["total"],
        "counted_to": "end-of-runs marker" if marker is not None else "process exit",
        "total": parsed["total"],
        "wall_s": wall,
        "emulated_inference_avg_us": summary["inference_avg_us"],
        "checksum": found.group(1) if found else None,
    }


def _prepare(model, binary, sysroot, cache: Path | None, log: Log) -> tuple:
    """``(model, binary, sysroot, tools)`` checked for a counted run: the model a TFLite
    flatbuffer, the binary aarch64, the sysroot a folder; qemu-user found and the plugin built."""
    model = Path(model)
    if not model.is_file():
        raise EmulationError(f"{model}: no such file")
    with model.open("rb") as f:
        identifier = f.read(8)[4:8]
    if identifier != b"TFL3":
        raise EmulationError(f"{model}: not a TFLite flatbuffer (no TFL3 identifier)")
    qemu = find_qemu()
    binary, sysroot = check_binary(binary), check_sysroot(sysroot)
    tools = {"qemu": qemu, "plugin": build_plugin(cache or cache_dir(), log)}
    return model, binary, sysroot, tools


def count_instructions(
    model: str | Path,
    binary: str | Path,
    sysroot: str | Path | None,
    cpu: str = QEMU_CPU,
    cache: Path | None = None,
    log: Log = _stderr_log,
) -> dict:
    """Per-inference aarch64 instructions of an LCE flatbuffer under ``binary``, with provenance
    (the binary's sha256, qemu CPU, both counts)."""
    model, binary, sysroot, tools = _prepare(model, binary, sysroot, cache, log)
    log(f"counting {model.name} under {QEMU} -cpu {cpu} with {binary} (1+{RUNS[0]}, 1+{RUNS[1]})")
    low, high = (counted_run(binary, sysroot, model.resolve(), n, tools, cpu) for n in RUNS)
    if high["count"] <= low["count"]:
        raise EmulationError(
            f"{model}: instruction counts do not grow with runs: {low['count']}, {high['count']}"
        )
    return {
        "instructions": (high["count"] - low["count"]) / (RUNS[1] - RUNS[0]),
        "counts": {f"count_{RUNS[0]}": low["count"], f"count_{RUNS[1]}": high["count"]},
        "counted_to": high["counted_to"],
        "binary": str(binary),
        "binary_sha256": sha256_file(binary),
        "sysroot": str(sysroot) if sysroot else None,
        "qemu_cpu": cpu,
        "checksum": high["checksum"],
        "process_wall_s": low["wall_s"] + high["wall_s"],
        "method": (
            f"LCE aarch64 benchmark binary under {QEMU} -cpu {cpu}, guest instructions per "
            "inference (icount plugin, (count(3 runs) - count(1 run)) / 2) x device ms per "
            "M-instruction"
        ),
    }


def profile_ops(
    model: str | Path,
    binary: str | Path,
    sysroot: str | Path | None,
    cpu: str = QEMU_CPU,
    cache: Path | None = None,
    log: Log = _stderr_log,
) -> dict[int, int]:
    """Instructions of every op (by node index) in one steady-state inference (the regular run
    after one warm-up), from the markers the bundle's runner sets around each op with
    ``--profile`` (event ``h``: markers ``2h`` and ``2h+1``); LCE's official tool has no such
    flag. The figures include the marker calls themselves (about 45 instructions per op)."""
    model, binary, sysroot, tools = _prepare(model, binary, sysroot, cache, log)
    with tempfile.TemporaryDirectory(prefix="vlrface-lce-") as tmp:
        counts, events = Path(tmp, "icount.txt"), Path(tmp, "events.txt")
        cmd = command(tools["qemu"], tools["plugin"], counts, binary, sysroot, model, 1, cpu)
        done = subprocess.run([*cmd, f"--profile={events}"], capture_output=True, text=True)
        if done.returncode != 0:
            raise EmulationError(
                failure_line(done.stderr, done.returncode, binary, sysroot, model, done.stdout)
            )
        if not events.is_file():
            raise EmulationError(f"{binary}: wrote no --profile events (not the bundle's runner?)")
        marks = parse_plugin_output(counts.read_text(), str(counts))["marks"]
        per_op = {}
        for line in events.read_text().splitlines():
            word = line.split()
            if len(word) >= 3 and word[0] == "event":
                h, node = int(word[1]), int(word[2])
                per_op[node] = marks[2 * h + 1] - marks[2 * h]
    return per_op


def emulate_lce(
    model: str | Path,
    devices_: list[str] | tuple[str, ...],
    binary: str | Path,
    sysroot: str | Path | None,
    cpu: str = QEMU_CPU,
    log: Log = _stderr_log,
) -> dict:
    """Emulated single-thread ARM latency of an LCE flatbuffer on each of ``devices_``: the
    shape of ``emulate.emulate`` (``latency.source``, ``latency.<device>.ms``, ``details``)."""
    from vlrface.latency.estimate import devices

    table = devices()
    unknown = sorted(set(devices_) - set(table))
    if unknown:
        raise ValueError(f"unknown device(s) {unknown}; known: {sorted(table)}")
    counted = count_instructions(model, binary, sysroot, cpu, log=log)
    insns = counted["instructions"]
    payload = {"model": str(model), "latency.source": "emulated"}
    details = {}
    for device in devices_:
        ms = to_ms(insns, device, table)
        payload[f"latency.{device}.ms"] = ms
        payload[f"latency.{device}.instructions"] = insns
        details[device] = {
            "ms": ms,
            "instructions": insns,
            "source": "emulated",
            "ms_per_minsn": float(table[device]["ms_per_minsn"]),
            "device_source": table[device]["source"],
        }
    return {
        **payload,
        **counted,
        "host": platform.machine(),
        "details": details,
    }
