"""The ``vlrface`` command line: the same functions the pipelines use, for people.

One module per command group; each holds wiring only (options, one library call, output):

* ``data``: ``data synth|manifest|align``;
* ``stack``: ``stack setup``, ``infra config``;
* ``models``: ``efficiency``, ``import-checkpoint`` (Keras models and the authors' checkpoint);
* ``evaluate``: ``evaluate`` (the benchmark protocols);
* ``export``: ``export lce|onnx``;
* ``latency``: ``latency``;
* ``registry``: ``models list|history|card``, ``promote``, ``report``;
* ``serving``: ``verify``, ``enroll``, ``identify``.

Every command that takes a model takes the same references (``vlrface.references``); human
output is ``vlrface.cli._output``'s, ``--json`` the payload as it is.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import click  # noqa: E402

from vlrface.cli import data, evaluate, export, latency, models, registry, serving, stack  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vlrface")
def main() -> None:
    """vlrface: very-low-resolution face recognition, from data to a promoted ARM model."""


for _module in (data, stack, models, evaluate, export, latency, registry, serving):
    for _command in _module.COMMANDS:
        main.add_command(_command)


def one_line_error(exc: BaseException) -> str:
    """An exception as the one line the CLI prints: store errors (MLflow, SQL, locked or
    unreachable databases), OS and parser errors say what failed, not where in the code."""
    first = (str(exc).strip().splitlines() or [""])[0].strip()
    name = type(exc).__name__
    module = type(exc).__module__.split(".")[0]
    if module == "mlflow":
        return f"MLflow store: {first[:300]}"
    if module in ("sqlalchemy", "sqlite3", "psycopg2", "pymysql"):
        return f"tracking database: {first[:300]}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or first}"
    return f"{name}: {first[:300]}" if first else name


def run() -> None:
    """Console entry point: ``VlrfaceError``s (click) and any other failure print as one
    ``Error:`` line and exit 1 (``VLRFACE_DEBUG=1`` shows the traceback); SIGTERM ends the
    command as an error, so what it holds is released."""
    import signal

    def _terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    try:
        main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into a line
        if os.environ.get("VLRFACE_DEBUG"):
            raise
        click.echo(f"Error: {one_line_error(exc)}", err=True)
        sys.exit(1)
