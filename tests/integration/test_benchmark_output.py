"""Benchmarks print a table for people by default and JSON lines with ``--json``
(`benchmarks/report.py`, shared by every ``benchmarks/*_bench.py``)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from report import Report, cell, render_table  # noqa: E402

WIDE = {
    "benchmark": "wide",
    "validators": 64,
    "envelopes": 129,
    "verify_seconds": 0.012345678,
    "protocol_seconds": 0.0234,
    "ratio_to_signature_checks": 1.8954,
    "goal_ratio_at_64": 2.0,
}


def run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / "scp_bench.py"), "--quick", *arguments],
        capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip


def test_the_scp_benchmark_prints_tables_by_default_and_json_lines_when_asked() -> None:
    table = run()
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "scp_envelope_processing" in lines and "scp_cost_per_slot" in lines
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])
    as_json = run("--json")
    assert as_json.returncode == 0, as_json.stderr
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [record["benchmark"] for record in records] == [
        "scp_envelope_processing", "scp_envelope_processing",
        "scp_cost_per_slot", "scp_cost_per_slot",
    ]  # fmt: skip
    # the table holds the same figures: the validators of each record, in order
    validators_row = next(line for line in lines if line.startswith("validators"))
    assert validators_row.split()[1:] == [str(records[0]["validators"]),
                                          str(records[1]["validators"])]  # fmt: skip


def test_every_benchmark_takes_the_json_flag() -> None:
    scripts = sorted(BENCHMARKS.glob("*_bench.py"))
    assert len(scripts) >= 6
    for script in scripts:
        text = script.read_text()
        assert "add_json_option(parser)" in text and "configure(" in text, script.name
        # figures go through the report (fbas_bench's child mode answers its parent in
        # JSON on purpose: that line is not a figure and has no flush)
        assert "print(json.dumps(line), flush=True)" not in text, script.name
        assert not re.search(r"print\(json\.dumps\(.*flush=True", text), script.name


def test_a_narrow_record_is_one_row_and_a_wide_one_is_turned_on_its_side() -> None:
    narrow = [{"line": "mac", "us_per_kib": 1.5}, {"line": "mac", "us_per_kib": 2.25}]
    assert render_table("mac", narrow, 80) == ["mac", "us_per_kib", "----------",
                                                "       1.5", "      2.25"]  # fmt: skip
    lines = render_table("wide", [WIDE, {**WIDE, "validators": 4}], 80)
    assert lines[0] == "wide"
    assert lines[1].split() == ["validators", "64", "4"]
    assert lines[3].split() == ["verify_seconds", "0.01235", "0.01235"]
    assert all(len(line) <= 80 for line in lines)
    # more records than fit side by side go on in a second block
    many = render_table("wide", [WIDE] * 12, 80)
    assert all(len(line) <= 80 for line in many)
    assert sum(line.startswith("validators") for line in many) == 2


def test_cells_are_short_and_json_output_is_the_record_unchanged() -> None:
    assert cell([1, 2, 3]) == "[1,2,3]"
    assert cell(None) == "-"
    assert cell("x" * 40) == "x" * 23 + "~"
    assert cell(1234.56789) == "1234.5679"
    stream = io.StringIO()
    report = Report(as_json=True, stream=stream)
    report.emit(WIDE)
    assert json.loads(stream.getvalue()) == WIDE
    table = Report(stream=(text := io.StringIO()), width=80)
    table.emit({"bench": "a", "x": 1})
    table.emit({"bench": "b", "x": 2})  # a new kind prints the table of the previous one
    assert text.getvalue().startswith("a\n")
    table.flush()
    assert "\nb\n" in text.getvalue()
