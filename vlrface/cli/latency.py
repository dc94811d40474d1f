"""``vlrface latency``: single-thread ARM latency of an exported model, every figure with its
source (``vlrface.latency.sources``)."""

from __future__ import annotations

import click

from vlrface.cli._common import emit, json_option


@click.command("latency")
@click.option(
    "--model",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="An LCE flatbuffer (.tflite) or an ONNX model (.onnx).",
)
@click.option(
    "--device",
    "devices_",
    multiple=True,
    required=True,
    help="Device name(s) from vlrface/latency/devices.yaml; repeatable.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "estimated", "measured", "emulated"]),
    default="auto",
    show_default=True,
    help="measured: run it here (arm64 only); emulated: count the model's aarch64 instructions "
    "under qemu-aarch64 (.tflite: with --benchmark-binary; .onnx: onnxruntime, set up on first "
    "use); auto: measured if possible, else emulated for a .tflite with --benchmark-binary and "
    "qemu-aarch64 on PATH, else estimated (.tflite). auto never emulates an .onnx: ask for it.",
)
@click.option(
    "--benchmark-binary",
    type=click.Path(dir_okay=False),
    help="An aarch64 lce_benchmark_model (LCE's lce_benchmark_model_aarch64), for measured or "
    "emulated .tflite latency.",
)
@click.option(
    "--sysroot",
    type=click.Path(file_okay=False),
    help="The benchmark binary's aarch64 shared libraries, for qemu-aarch64 -L (emulated).",
)
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1))
@json_option
def latency_cmd(path, devices_, backend, benchmark_binary, sysroot, runs, as_json) -> None:
    """Single-thread ARM latency of an exported model, with the provenance of every figure:
    ms and instructions per inference per device.

    ``--backend emulated`` counts aarch64 instructions under qemu-user (.tflite: LCE's benchmark
    binary, ``vlrface.latency.emulate_lce``; .onnx: onnxruntime, ``vlrface.latency.emulate``)
    and converts them with the devices' constants.
    """
    from pathlib import Path

    from vlrface.latency import estimate, sources

    unknown = sorted(set(devices_) - set(estimate.devices()))
    if unknown:
        raise click.BadParameter(
            f"unknown device(s) {unknown}; known: {sorted(estimate.devices())}",
            param_hint="--device",
        )
    suffix = Path(path).suffix
    if suffix not in (".tflite", ".onnx"):
        raise click.BadParameter(f"{path}: expected a .tflite or .onnx file", param_hint="--model")
    fmt = "onnx" if suffix == ".onnx" else "lce"
    source, why = sources.pick(backend, fmt, benchmark_binary, any_host=True, fall_back_now=True)
    if backend == "auto" and source == "estimated" and benchmark_binary:
        click.echo(why, err=True)  # a benchmark binary given, but it cannot run here
    if fmt == "lce" and source in ("emulated", "measured") and not benchmark_binary:
        raise click.UsageError(f"{source} .tflite latency needs --benchmark-binary")
    if fmt == "onnx" and source in ("estimated", "unavailable"):
        raise click.UsageError(
            f"{path}: the ARM cost model prices LCE flatbuffers; measure ONNX models on an "
            "arm64 host (--backend measured) or under emulation (--backend emulated)"
        )
    payload = sources.model_latency(path, list(devices_), source, benchmark_binary, sysroot, runs)
    emit(payload, as_json)


COMMANDS = [latency_cmd]
