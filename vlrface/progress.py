"""Progress bars that read well both on a terminal and in a log.

``tqdm`` redraws its bar in place with carriage returns; written to a file (``make run >
run.log``, CI, ZenML's stored step logs) every redraw lands on one endless line. Every long loop
in vlrface uses this ``tqdm`` instead: on a terminal it is tqdm's own bar, elsewhere it prints one
plain line per update, at most every ``LOG_INTERVAL_S`` seconds (plus the first and the last).
"""

from __future__ import annotations

import sys

from tqdm import tqdm as _tqdm

LOG_INTERVAL_S = 15.0


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _Lines:
    """A stream for tqdm that turns each in-place redraw into a line of its own."""

    def __init__(self, stream):
        self.stream, self.last = stream, ""

    def write(self, text: str) -> None:
        line = str(text).replace("\r", "").rstrip()
        if line and line != self.last:  # tqdm's own blank writes and repeats carry nothing
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        getattr(self.stream, "flush", lambda: None)()


class tqdm(_tqdm):  # noqa: N801 - a drop-in for tqdm.tqdm
    """``tqdm.tqdm`` with a line-per-update mode when its stream is not a terminal."""

    def __init__(self, *args, **kwargs):
        stream = kwargs.get("file") or sys.stderr
        self._lines = not _is_terminal(stream)
        self._last_line = float("-inf")
        if self._lines:
            kwargs["file"] = _Lines(stream)
            kwargs.setdefault("mininterval", LOG_INTERVAL_S)
            kwargs.setdefault("maxinterval", max(LOG_INTERVAL_S, 10.0))
        super().__init__(*args, **kwargs)

    def refresh(self, nolock=False, lock_args=None):
        # in a log, ``set_postfix`` (a refresh per training step) must not print a line each:
        # the same interval as updates; ``close`` still prints the last line
        if self._lines and not self.disable:  # a disabled bar never set its clock
            now = self._time()
            if now - self._last_line < LOG_INTERVAL_S:
                return False
            self._last_line = now
        return super().refresh(nolock=nolock, lock_args=lock_args)
