"""The cost of parsing ``.mat`` files in a child interpreter (``tinyface.load_mat``) against
``scipy.io.loadmat`` in process, on a 500-entry devkit-style list:

    python benchmarks/mat_isolation.py
"""

import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io

from vlrface.data import tinyface


def main(n: int = 20) -> None:
    path = Path(tempfile.mkdtemp()) / "probe_img_ID_pairs.mat"
    names = np.array([[f"{i}_1.jpg"] for i in range(500)], dtype=object)
    scipy.io.savemat(path, {"probe_set": names, "probe_ids": np.arange(500.0)})
    t = time.perf_counter()
    for _ in range(n):
        scipy.io.loadmat(path)
    inproc = (time.perf_counter() - t) / n
    t = time.perf_counter()
    tinyface.load_mat(path, ("probe_set", "probe_ids"))
    first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(n):
        tinyface.load_mat(path, ("probe_set", "probe_ids"))
    child = (time.perf_counter() - t) / n
    print(
        f"in-process loadmat {inproc * 1e3:.1f} ms/file; isolated {child * 1e3:.1f} ms/file "
        f"(first call, starting the child: {first * 1e3:.0f} ms)"
    )


if __name__ == "__main__":
    main()
