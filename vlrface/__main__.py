"""``python -m vlrface`` == the ``vlrface`` console script."""

from vlrface.cli import run

run()
