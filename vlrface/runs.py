"""Clean failure of pipeline runs: a run never stays ``running`` after its process is gone.

Every vlrface pipeline wires these ZenML hooks (``@pipeline(on_start=..., on_failure=...)``,
``HOOKS``), which run at each step:

- ``on_start``: records the process (``vlrface.pid``, ``vlrface.host``) on the ZenML pipeline
  run and on the step's MLflow run; makes SIGTERM end the step as a failure (so ZenML and MLflow
  record it); and, once a process, ``reap``s what earlier runs left behind.
- ``on_failure``: ends the step's MLflow run ``FAILED``, retrying transient store errors
  (a locked or unreachable database) for a bounded time.
- ``reap``: a ZenML run (and its steps) still ``running`` whose recorded process on this host is
  gone (SIGKILL, power loss) becomes ``failed``; an MLflow run still ``RUNNING`` with such a
  process becomes ``KILLED``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket

log = logging.getLogger(__name__)

PID, HOST = "vlrface.pid", "vlrface.host"
_ACTIVE = ("running", "initializing", "provisioning", "queued")
_reaped = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_here(host, pid) -> bool:
    """A process recorded on this host that no longer exists."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    return host == socket.gethostname() and pid != os.getpid() and not _alive(pid)


def _sigterm(signum, frame):
    raise SystemExit(f"terminated by signal {signum} (SIGTERM)")


def on_start() -> None:
    """Step start hook (see the module docstring)."""
    from zenml import get_step_context, log_metadata

    from vlrface.registry import retrying

    global _reaped
    here = {PID: os.getpid(), HOST: socket.gethostname()}
    ctx = get_step_context()
    if not _reaped:
        _reaped = True
        try:
            reap(exclude=ctx.pipeline_run.id)
        except Exception as exc:  # noqa: BLE001 - reaping is best effort, never fatal
            log.warning("could not check for runs left running: %s", exc)
    try:
        retrying(log_metadata, metadata=here, run_id_name_or_prefix=ctx.pipeline_run.id)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not record the run's process: %s", exc)
    import mlflow

    if mlflow.active_run() is not None:
        try:
            retrying(mlflow.set_tags, {k: str(v) for k, v in here.items()})
        except Exception as exc:  # noqa: BLE001
            log.warning("could not tag the MLflow run with its process: %s", exc)
    try:
        signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:  # not the main thread: the orchestrator handles signals
        pass


def on_failure(exception: BaseException) -> None:
    """Step failure hook: the step's MLflow run ends ``FAILED`` (retried on a locked store)."""
    import mlflow

    from vlrface.registry import retrying

    run = mlflow.active_run()
    if run is None:
        return
    try:
        retrying(mlflow.MlflowClient().set_terminated, run.info.run_id, "FAILED", budget=60.0)
    except Exception as exc:  # noqa: BLE001 - the next start's reap finishes it
        log.warning("could not mark MLflow run %s FAILED: %s", run.info.run_id, exc)


HOOKS = {"on_start": on_start, "on_failure": on_failure}


def reap(exclude=None, tracking_uri: str | None = None) -> dict[str, list[str]]:
    """Mark runs whose process died (recorded on this host, gone now) as failed: ZenML pipeline
    runs and their unfinished steps ``failed``, MLflow runs ``KILLED``. Returns what changed."""
    from datetime import UTC, datetime

    from mlflow import MlflowClient
    from zenml.client import Client
    from zenml.enums import ExecutionStatus
    from zenml.models import PipelineRunUpdate, StepRunUpdate

    done: dict[str, list[str]] = {"zenml": [], "mlflow": []}
    client = Client()
    for status in _ACTIVE:
        for run in client.list_pipeline_runs(status=status, size=200, hydrate=True).items:
            if exclude is not None and run.id == exclude:
                continue
            meta = run.run_metadata or {}
            if not _dead_here(meta.get(HOST), meta.get(PID)):
                continue
            now = datetime.now(UTC).replace(tzinfo=None)
            for step in run.steps.values():
                if str(step.status) in _ACTIVE:
                    client.zen_store.update_run_step(
                        step.id, StepRunUpdate(status=ExecutionStatus.FAILED, end_time=now)
                    )
            client.zen_store.update_run(
                run.id,
                PipelineRunUpdate(
                    status=ExecutionStatus.FAILED,
                    status_reason=f"its process {meta.get(PID)} died (found by a later run)",
                ),
            )
            done["zenml"].append(str(run.id))
            log.warning("run %s: its process %s is gone; marked failed", run.name, meta.get(PID))
    mlflow_client = MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    if experiments:
        for r in mlflow_client.search_runs(
            experiments, filter_string="attributes.status = 'RUNNING'", max_results=1000
        ):
            if _dead_here(r.data.tags.get(HOST), r.data.tags.get(PID)):
                mlflow_client.set_terminated(r.info.run_id, "KILLED")
                done["mlflow"].append(r.info.run_id)
    return done


def log_metrics_resilient(metrics: dict, step: int | None = None, budget: float = 60.0) -> bool:
    """``mlflow.log_metrics`` from inside a training loop: transient store errors (a locked or
    unreachable database) are retried for ``budget`` seconds, and if the store is still down
    the loop goes on (the figures stay in the run's history and checkpoints) with a warning.
    Returns whether they were logged."""
    import mlflow

    from vlrface.registry import retrying, transient

    try:
        retrying(mlflow.log_metrics, metrics, step=step, budget=budget)
        return True
    except Exception as exc:
        if not transient(exc):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        log.warning("MLflow store unavailable, step %s's metrics not logged: %s", step, first)
        return False


def _accepted(*fields_of) -> frozenset[str]:
    import inspect

    keys: set[str] = set()
    for owner in fields_of:
        if hasattr(owner, "model_fields"):
            keys |= set(owner.model_fields)
        else:
            keys |= set(inspect.signature(owner).parameters) - {"self", "merge"}
    return frozenset(keys)


def run_settings_keys() -> tuple[frozenset[str], frozenset[str]]:
    """The keys the installed ZenML reads from a run configuration file: at the top level (its
    ``PipelineRunConfiguration`` and ``Pipeline.configure``) and in a ``steps.<name>`` entry
    (``StepConfigurationUpdate`` and ``BaseStep.configure``). ZenML ignores any other key
    silently, so a misspelt ``enable_cahce`` would just be dropped."""
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration
    from zenml.config.step_configurations import StepConfigurationUpdate
    from zenml.pipelines.pipeline_definition import Pipeline
    from zenml.steps.base_step import BaseStep

    return (
        _accepted(PipelineRunConfiguration, Pipeline.configure),
        _accepted(StepConfigurationUpdate, BaseStep.configure),
    )


def _unknown(path, where: str, key, accepted: frozenset[str]):
    import difflib

    from vlrface.errors import ConfigError

    near = difflib.get_close_matches(str(key), sorted(accepted), n=1)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    if not near and not where:
        hint = "; the pipeline's own settings go under 'parameters:'"
    return ConfigError(f"{path}: unknown key '{where}{key}' (not a ZenML run setting{hint})")


def check_run_settings(path) -> None:
    """Raise ``ConfigError`` naming ``path`` and the key for a key outside ``parameters:``
    that ZenML does not read (top level, or inside a ``steps.<name>`` entry). ``parameters``
    itself is the pipeline's strict schema (``vlrface.config``)."""
    import yaml

    from vlrface.errors import ConfigError
    from vlrface.fileio import read_text

    try:
        raw = yaml.safe_load(read_text(path))
    except Exception as exc:  # noqa: BLE001 - ZenML itself read this file; name it anyway
        raise ConfigError(f"{path}: not a valid run configuration ({str(exc)[:120]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a run configuration must be a mapping")
    top, step = run_settings_keys()
    for key in raw:
        if key not in top:
            raise _unknown(path, "", key, top)
    steps = raw.get("steps")
    for name, entry in (steps if isinstance(steps, dict) else {}).items():
        for key in entry if isinstance(entry, dict) else ():
            if key not in step:
                raise _unknown(path, f"steps.{name}.", key, step)


def check_compiling_run_settings() -> None:
    """``check_run_settings`` on the configuration file of the pipeline ZenML is compiling
    (``zenml pipeline run ... -c FILE`` or ``.with_options(config_path=FILE)``); nothing
    outside a compilation or without a file. Call it first in a pipeline's body."""
    from zenml.pipelines.compilation_context import PipelineCompilationContext

    context = PipelineCompilationContext.get()
    path = context.pipeline._run_args.get("config_path") if context is not None else None
    if path:
        check_run_settings(path)


def pipeline_config(parse, parameters: dict):
    """A pipeline's configuration: ``parse`` (``vlrface.config``'s) of the pipeline function's
    ``parameters`` that are set (not None), after ``check_compiling_run_settings``. Call it
    first in a pipeline's body, with ``dict(locals())``."""
    check_compiling_run_settings()  # a typo outside parameters: fails too
    return parse({k: v for k, v in parameters.items() if v is not None}, "parameters")
