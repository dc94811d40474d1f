"""User-facing errors: one line that names the file or key at fault.

They derive from ``click.ClickException`` so that any click CLI (``vlrface``, and ``zenml
pipeline run`` while it compiles a pipeline) prints ``Error: <message>`` and exits with 1 instead
of a traceback; from Python they are ordinary ``ValueError``s.
"""

from __future__ import annotations

import click


class VlrfaceError(click.ClickException, ValueError):
    def __init__(self, message: str):
        click.ClickException.__init__(self, message)
        ValueError.__init__(self, message)

    def __str__(self) -> str:
        return self.message


class ConfigError(VlrfaceError):
    """An invalid configuration; the message names the key."""


class DataError(VlrfaceError):
    """Bad input data; the message names the file and what is wrong with it."""


class StoreError(VlrfaceError):
    """A remote store (the MLflow server, an S3 bucket, PostgreSQL) is unreachable, missing, or
    refuses the credentials; the message names the component and its address."""


class IntegrityError(VlrfaceError):
    """A model file whose sha256 is not the one recorded for it (or a file nobody recorded)."""


class LoaderError(VlrfaceError):
    """A training loader's worker process died (killed, out of memory); the message names the
    loader and the batch it was computing."""
