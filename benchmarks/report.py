"""How every benchmark prints its figures: a table for people by default, JSON lines for
programs with ``--json``.

Each benchmark hands its records (flat JSON objects) to `emit`.  With ``--json`` each is
printed at once as one JSON line, exactly as the record is.  Otherwise records of one
kind (their ``benchmark``, ``bench``, ``line``, ``phase``, ``kind`` or ``analysis`` field) are
gathered and printed as one table when the kind changes or the run ends: one row per
record when that fits the terminal's width (80 columns when it is not a terminal), else
one row per field and one column per record, as many records side by side as fit.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

KIND_FIELDS = ("benchmark", "bench", "line", "phase", "kind", "analysis")
"""The field that names what a record measures, first found first."""

MAX_CELL = 24
"""Characters of one cell; a longer value (a list, a long name) is cut with '~'."""


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """The ``--json`` flag every benchmark takes."""
    parser.add_argument(
        "--json", action="store_true", help="print JSON lines (one per figure) instead of tables"
    )


class Report:
    """Where a benchmark's records go (see the module docstring)."""

    def __init__(
        self, *, as_json: bool = False, stream: TextIO | None = None, width: int | None = None
    ) -> None:
        self.as_json = as_json
        self.stream = stream if stream is not None else sys.stdout
        self.width = width if width is not None else shutil.get_terminal_size((80, 24)).columns
        self._kind: str | None = None
        self._group: list[dict[str, Any]] = []

    def emit(self, record: Mapping[str, Any]) -> None:
        """Print `record` now (``--json``), or add it to the table of its kind."""
        if self.as_json:
            self.stream.write(json.dumps(dict(record)) + "\n")
            self.stream.flush()
            return
        kind = kind_of(record)
        if kind != self._kind:
            self.flush()
            self._kind = kind
        self._group.append(dict(record))

    def flush(self) -> None:
        """Print the table of the records gathered so far (if any)."""
        if not self._group:
            return
        title = self._kind or "results"
        self.stream.write("\n".join(render_table(title, self._group, self.width)) + "\n\n")
        self.stream.flush()
        self._group = []


def kind_of(record: Mapping[str, Any]) -> str:
    """What `record` measures (the first `KIND_FIELDS` field it has)."""
    for field in KIND_FIELDS:
        if isinstance(record.get(field), str):
            return str(record[field])
    return ""


def cell(value: Any) -> str:
    """One value as table text: integers as they are, floats to four significant digits
    below 1 and four decimals at most above, containers as compact JSON; cut to
    `MAX_CELL` characters."""
    if isinstance(value, float):
        # four significant digits for small values, four decimals at most for the rest
        text = f"{value:.4g}" if abs(value) < 1 else f"{value:.4f}".rstrip("0").rstrip(".")
    elif isinstance(value, str):
        text = value
    elif value is None:
        text = "-"
    else:
        text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "~"


def render_table(title: str, records: Sequence[Mapping[str, Any]], width: int) -> list[str]:
    """The lines of one table (see the module docstring)."""
    kind_field = _kind_field(records)  # in the title already
    fields = [field for field in _fields(records) if field != kind_field]
    rows = [[cell(record.get(field, "")) for field in fields] for record in records]
    widths = [
        max(len(field), *(len(row[index]) for row in rows)) for index, field in enumerate(fields)
    ]
    if sum(widths) + 2 * (len(widths) - 1) <= width:
        lines = [title, _join(fields, widths), _join(["-" * size for size in widths], widths)]
        return lines + [_join(row, widths) for row in rows]
    return [title, *_transposed(fields, rows, width)]


def _fields(records: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(record))
    return list(seen)


def _kind_field(records: Sequence[Mapping[str, Any]]) -> str | None:
    for field in KIND_FIELDS:
        if all(isinstance(record.get(field), str) for record in records):
            return field
    return None


def _transposed(fields: list[str], rows: list[list[str]], width: int) -> list[str]:
    label = max(len(field) for field in fields)
    columns = [max(len(value) for value in row) for row in rows]
    lines: list[str] = []
    start = 0
    while start < len(rows):
        end, used = start, label
        while end < len(rows) and (end == start or used + 2 + columns[end] <= width):
            used += 2 + columns[end]
            end += 1
        for index, field in enumerate(fields):
            values = [rows[number][index].rjust(columns[number]) for number in range(start, end)]
            lines.append("  ".join([field.ljust(label), *values]).rstrip())
        if end < len(rows):
            lines.append("")
        start = end
    return lines


def _join(values: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(value.rjust(size) for value, size in zip(values, widths, strict=True)).rstrip()


_REPORT = Report()
atexit.register(_REPORT.flush)


def configure(arguments: argparse.Namespace) -> Report:
    """Set the process's report from the parsed ``--json`` flag; returns it."""
    _REPORT.as_json = bool(getattr(arguments, "json", False))
    return _REPORT


def emit(record: Mapping[str, Any]) -> None:
    """Hand `record` to the process's report (see `configure`)."""
    _REPORT.emit(record)
