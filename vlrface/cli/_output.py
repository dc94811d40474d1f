"""Human output of the ``vlrface`` commands: ``key: value`` lines for scalars, aligned tables
for nested figures, numbers rounded for reading. ``--json`` prints the payload unchanged."""

from __future__ import annotations

import json
import math
import numbers

import click


def number(x) -> str:
    """A figure for reading: integers with thousands separators from 10,000, floats to 4
    significant digits (0.7499999999999999 -> 0.75), large floats without decimals."""
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, numbers.Number):
        return str(x)
    if isinstance(x, numbers.Integral):
        return f"{int(x):,}" if abs(int(x)) >= 10_000 else str(int(x))
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 1e5:
        return f"{x:,.0f}"
    if x == int(x) and abs(x) >= 1:
        return str(int(x))
    return f"{x:.4g}"


def cell(x) -> str:
    if isinstance(x, list | tuple) and all(not isinstance(v, dict | list) for v in x):
        return ", ".join(cell(v) for v in x)
    return number(x)


def _numeric(x) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool)


def table(header: list[str], rows: list[list], indent: str = "") -> list[str]:
    """Rows under a header, columns aligned; numbers right-aligned, text left-aligned."""
    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(header)]
    right = [
        bool(rows) and all(_numeric(r[i]) or r[i] is None for r in rows) for i in range(len(header))
    ]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return (indent + "  ".join(parts)).rstrip()

    return [line(list(header)), *(line(r) for r in text)]


def _scalar(x) -> bool:
    """A value printed in one cell: a number, a string, a list of them."""
    if isinstance(x, dict):
        return False
    return not isinstance(x, list | tuple) or all(not isinstance(v, dict | list | tuple) for v in x)


def render(payload: dict, indent: str = "") -> list[str]:
    """``payload`` for people: ``key: value`` for scalars; a mapping of scalars as an aligned
    two-column block; a mapping of mappings, or a list of mappings, as a table."""
    lines = []
    for key, value in payload.items():
        if _scalar(value):
            lines.append(f"{indent}{key}: {cell(value)}")
        elif isinstance(value, dict) and all(_scalar(v) for v in value.values()):
            lines.append(f"{indent}{key}:")
            rows = [[k, v] for k, v in value.items()]
            lines += table(["", ""], rows, indent + "  ")[1:]
        elif isinstance(value, dict) and all(
            isinstance(v, dict) and all(_scalar(x) for x in v.values()) for v in value.values()
        ):
            columns = list(dict.fromkeys(c for v in value.values() for c in v))
            rows = [[k, *(v.get(c) for c in columns)] for k, v in value.items()]
            lines += [f"{indent}{key}:", *table(["", *columns], rows, indent + "  ")]
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(c for v in value for c in v))
            lines += [
                f"{indent}{key}:",
                *table(columns, [[v.get(c) for c in columns] for v in value], indent + "  "),
            ]
        elif isinstance(value, dict):
            lines += [f"{indent}{key}:", *render(value, indent + "  ")]
        else:
            lines.append(f"{indent}{key}: {json.dumps(value)}")
    return lines


def emit(payload: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo("\n".join(render(payload)))
