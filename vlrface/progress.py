"""Progress bars that read well both on a terminal and in a log.

``tqdm`` redraws its bar in place with carriage returns; written to a file (``make run >
run.log``, CI, ZenML's stored step logs) every redraw lands on one endless line. Every long loop
in vlrface uses this ``tqdm`` instead: on a terminal it is tqdm's own bar, elsewhere it prints one
plain line per update, at most every ``LOG_INTERVAL_S`` seconds (plus the first and the last).

Each logged line shows the count and the postfix as they are when it prints. Off a terminal
the line is printed by a count only (``update``, or the next item of the iterable), never by
``set_postfix``: set the postfix first, then count the step. tqdm's iterator counts in a local
variable that reaches the bar only when a line is due, so a line printed from ``set_postfix``
showed a count one interval old (``0/20 ... loss=13.459`` after the first step); off a
terminal the iterator counts each item on the bar.
"""

from __future__ import annotations

import re
import sys

from tqdm import tqdm as _tqdm

LOG_INTERVAL_S = 15.0
# terminal control sequences: a nested bar (evaluation's per-protocol bar) moves the cursor up
# to redraw in place ("\x1b[A"), which in a log is a line of its own
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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
        line = _CONTROL.sub("", str(text)).replace("\r", "").rstrip()
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
        if self._lines:
            kwargs["file"] = _Lines(stream)
            kwargs.setdefault("mininterval", LOG_INTERVAL_S)
            kwargs.setdefault("maxinterval", max(LOG_INTERVAL_S, 10.0))
        super().__init__(*args, **kwargs)

    def __iter__(self):
        if not self._lines or self.disable:
            yield from super().__iter__()
            return
        try:  # each item counted on the bar: a line shows the count when it prints
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    # in a log a line is printed by a count (at most every LOG_INTERVAL_S), not by a new
    # postfix or description (one per training step): they show in the next line

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=refresh and not self._lines, **kwargs)

    def set_postfix_str(self, s="", refresh=True):
        super().set_postfix_str(s, refresh=refresh and not self._lines)

    def set_description(self, desc=None, refresh=True):
        super().set_description(desc, refresh=refresh and not self._lines)

    def set_description_str(self, desc=None, refresh=True):
        super().set_description_str(desc, refresh=refresh and not self._lines)
