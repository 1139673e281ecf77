"""Write the results folder: one CSV per table, and report.md tying tables and plots together.

Every file the report links is written by this run into the same folder, and every link is
relative, so the folder can be moved or committed as a whole (benchmarks/report/ is such a copy).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from benchmarks.common import SectionResult, Table

REPORT_NAME = "report.md"
ROUNDS_NAME = "rounds.csv"
"""Every round of every figure, one row each: what `benchmarks.compare` reads."""
ENVIRONMENT_NAME = "environment.json"
"""The run's environment, profile, command, and each section's seconds and load average."""
ROUNDS_COLUMNS = ("section", "figure", "kind", "better", "unit", "round", "value")


def format_cell(value: object) -> str:
    """A table cell: floats to 4 significant figures, NaN as a dash, pipes escaped."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(format_cell(_plain(v)) for v in row) + " |")
    return "\n".join(lines)


def _plain(value: object) -> object:
    """numpy scalars to Python ones, so formatting treats them alike."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def write_tables(out: Path, result: SectionResult) -> list[Path]:
    paths = []
    for table in result.tables:
        path = out / f"{table.name}.csv"
        table.frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def write_rounds(out: Path, results: Sequence[SectionResult]) -> Path:
    rows = [
        (result.key, r.figure, r.kind, r.better, r.unit, number, value)
        for result in results
        for r in result.rounds
        for number, value in enumerate(r.values, start=1)
    ]
    path = out / ROUNDS_NAME
    pd.DataFrame(rows, columns=list(ROUNDS_COLUMNS)).to_csv(path, index=False)
    return path


def write_environment(out: Path, environment: Mapping[str, object]) -> Path:
    path = out / ENVIRONMENT_NAME
    path.write_text(json.dumps(environment, indent=2) + "\n", encoding="utf-8")
    return path


def _table_block(table: Table) -> list[str]:
    lines = [f"**{table.title}** ([{table.name}.csv]({table.name}.csv))", ""]
    if table.show:
        lines += [markdown_table(table.frame), ""]
    return lines


def write_report(
    out: Path,
    results: Sequence[SectionResult],
    *,
    header: dict[str, str],
    environment: dict[str, str],
    skipped: Sequence[tuple[str, str]],
    quick: bool,
) -> Path:
    """report.md: header, machine, summary of checks and headline figures, then each section."""
    lines = ["# softmaxreg benchmark report", ""]
    if quick:
        lines += [
            "> **Quick mode (smoke check)**: tiny sizes and a single repeat; the figures below "
            "only show that the suite runs and mean nothing about speed or accuracy.",
            "",
        ]
    lines += [f"- **{key}**: {value}" for key, value in header.items()]
    lines.append(
        f"- **Rounds**: every round of every figure in [{ROUNDS_NAME}]({ROUNDS_NAME}), the "
        f"environment and each section's load in [{ENVIRONMENT_NAME}]({ENVIRONMENT_NAME}): what "
        "`python -m benchmarks.compare` reads"
    )
    lines += ["", "## Machine", "", "| key | value |", "|---|---|"]
    lines += [f"| {key} | {format_cell(value)} |" for key, value in environment.items()]

    lines += [
        "",
        "## Summary",
        "",
        "| figure | value | target | verdict | note |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        for check in result.checks:
            value = "—" if check.value is None else format_cell(float(check.value))
            lines.append(
                f"| {check.figure} | {value} | {check.target} | {check.verdict} | "
                f"{format_cell(check.note)} |"
            )
    lines += ["", "| figure (no target) | value |", "|---|---|"]
    for result in results:
        lines += [f"| {figure} | {format_cell(value)} |" for figure, value in result.headlines]
    for key, reason in skipped:
        lines.append(f"| {key} | not measured: {format_cell(reason)} |")

    for number, result in enumerate(results, start=1):
        lines += ["", f"## {number}. {result.title}", ""]
        lines += [
            f"_Section `{result.key}`: {result.seconds:.1f} s, machine load average "
            f"{result.load[0]:.2f} → {result.load[1]:.2f}"
            + (f", MLflow run `{result.run_id}`_" if result.run_id else "_"),
            "",
        ]
        for paragraph in result.text:
            lines += [paragraph, ""]
        for table in result.tables:
            lines += _table_block(table)
        for file_name, caption in result.plots:
            lines += [f"![{caption}]({file_name})", "", f"_{caption}_", ""]
    if skipped:
        lines += ["", "## Not measured", ""]
        lines += [f"- `{key}`: {reason}" for key, reason in skipped]
    path = out / REPORT_NAME
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path
