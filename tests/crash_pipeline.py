"""A one-step pipeline that ends as told (``ok``, ``raise``, ``term``: SIGTERM, ``kill``:
SIGKILL), with the vlrface run hooks: ``python -m tests.crash_pipeline <how>``."""

import os
import signal
import sys
import time

from zenml import pipeline, step

from vlrface.runs import HOOKS


@step(experiment_tracker="mlflow_tracker", enable_cache=False)
def end_as(how: str) -> int:
    if how == "raise":
        raise RuntimeError("the step failed")
    if how in ("term", "kill"):
        os.kill(os.getpid(), signal.SIGTERM if how == "term" else signal.SIGKILL)
        time.sleep(30)
    return 1


@pipeline(name="crash_test", enable_cache=False, **HOOKS)
def crash_pipeline(how: str = "ok"):
    end_as(how)


if __name__ == "__main__":
    crash_pipeline(how=sys.argv[1])
