"""Runs inside the emulated aarch64 Python (``vlrface.latency.emulate``): one ONNX model,
``runs`` inferences of one fixed input, with instruction-count markers around them.

Only numpy and onnxruntime are importable here (the aarch64 site of the emulation cache), so this
file imports nothing from vlrface. Usage: ``onnx_guest_runner.py MODEL INPUT.npy OUTPUT.npy RUNS``.

A marker is ``lseek(-1, MARK_MAGIC, id)``: it fails with EBADF and changes nothing, and the
``icount`` plugin (icount.c) writes the instruction count at that point. Marker 0 is set after
the session is built and the input loaded; marker ``i`` after the ``i``-th inference.
"""

import os
import sys
import time

import numpy as np
import onnxruntime as ort

MARK_MAGIC = 0x766C7266  # "vlrf"; the same constant as in icount.c


def mark(marker_id: int) -> None:
    """Ask the plugin to record the instruction count now."""
    try:
        os.lseek(-1, MARK_MAGIC, marker_id)
    except OSError:
        pass


def session(model: str):
    """onnxruntime on the CPU, one intra- and one inter-op thread, sequential execution."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def main(model: str, input_path: str, output_path: str, runs: int) -> None:
    sess = session(model)
    x = np.load(input_path)
    feed = {sess.get_inputs()[0].name: x}
    out = None
    mark(0)
    start = time.perf_counter()
    for i in range(runs):
        out = sess.run(None, feed)[0]
        mark(i + 1)
    wall = time.perf_counter() - start
    np.save(output_path, np.asarray(out))
    print(f"ort {ort.__version__} runs {runs} wall_s {wall:.6f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
