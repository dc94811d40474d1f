"""CI-sized fuzzing (hypothesis): every parser of untrusted bytes answers any input with its
result or the project's own error (``VlrfaceError``), never another exception. ``make fuzz``
runs the same targets with 10,000 cases each."""

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz import TARGETS, inputs, run_case


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_parser_raises_only_its_own_errors(target):
    @settings(
        max_examples=40, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(inputs(target))
    def check(data):
        outcome, detail = run_case(target, data)
        assert outcome != "foreign", detail

    check()


def test_a_crashing_mat_reader_takes_only_its_child_down(tmp_path):
    """The .mat parser runs in a child interpreter: killed mid-parse (as a segfault would), the
    caller gets a DataError naming the file and the next file is read by a new child."""
    import os
    import signal
    import threading

    import numpy as np
    import scipy.io

    from vlrface.data import tinyface
    from vlrface.errors import DataError

    fifo = tmp_path / "hang.mat"
    os.mkfifo(fifo)  # the child blocks reading it until it is killed
    reader = tinyface._MAT_READER
    with reader.lock:
        if reader.proc is None or reader.proc.poll() is not None:
            reader._start()
        pid = reader.proc.pid

    threading.Timer(1.0, lambda: os.kill(pid, signal.SIGSEGV)).start()
    with pytest.raises(DataError, match=r"hang\.mat: not a readable MATLAB .mat file \(the reader"):
        reader.load(fifo)
    good = tmp_path / "ok.mat"
    scipy.io.savemat(good, {"probe_set": np.array([["1_1.jpg"]], dtype=object), "probe_ids": 1.0})
    assert tinyface.read_id_pairs(good, "probe_set", "probe_ids") == [("1_1.jpg", 1)]
