"""The comparison as Markdown (to paste into a pull request) and as a PNG of the ratios.

Used by `python -m benchmarks.compare` (see its docstring for the verdict rule).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from benchmarks.report import format_cell, markdown_table

ENVIRONMENT_KEYS = (
    "git_commit",
    "profile",
    "cpu_model",
    "cpu_count",
    "usable_cpus",
    "device",
    "device_name",
    "platform",
    "torch_version",
    "torch_threads",
    "python_version",
    "started",
    "command",
)
TIMING_KEYS = {
    "cpu_model": "different CPUs: the timings compare machines, not code",
    "cpu_count": "different CPU counts: the thread-dependent figures compare machines",
    "usable_cpus": "different CPUs usable by the run (taskset, cgroups): multi-threaded and "
    "busy-core figures compare allowances, not code",
    "device": "different devices: every timing compares devices, not code",
    "device_name": "different device models: the timings compare hardware, not code",
    "torch_version": "different torch versions: a change may be torch's, not the code's",
    "torch_threads": "different torch thread counts: multi-threaded figures are not comparable",
    "profile": "different profiles: figures were measured at different sizes",
}
VERDICT_COLOURS = {
    "faster": "tab:green",
    "better": "tab:green",
    "slower": "tab:red",
    "worse": "tab:red",
    "unchanged": "tab:grey",
}


def environment_warnings(base: dict, new: dict) -> list[str]:
    """Where the runs differ in a way that makes a timing meaningless, or ran on a busy machine."""
    warnings = [
        f"**{key}** {base.get(key)!r} vs {new.get(key)!r}: {why}"
        for key, why in TIMING_KEYS.items()
        if str(base.get(key)) != str(new.get(key))
    ]
    for label, env in (("BASE", base), ("NEW", new)):
        cpus = env.get("cpu_count") or 1
        busy = [
            f"{name} ({load['load_average_start']:.1f} → {load['load_average_end']:.1f})"
            for name, load in env.get("sections", {}).items()
            if max(load["load_average_start"], load["load_average_end"]) > cpus
        ]
        if busy:
            warnings.append(
                f"{label} ran with a load average above its {cpus} CPUs in "
                + ", ".join(busy)
                + ": other processes shared the CPUs, so its timings there are pessimistic"
            )
    return warnings


def environment_table(base: dict, new: dict) -> str:
    rows = [
        {"": key, "base": base.get(key, "—"), "new": new.get(key, "—")} for key in ENVIRONMENT_KEYS
    ]
    sections = list(dict.fromkeys([*base.get("sections", {}), *new.get("sections", {})]))
    for name in sections:
        cells = []
        for env in (base, new):
            load = env.get("sections", {}).get(name)
            cells.append(
                "—"
                if load is None
                else f"{load['seconds']:.0f} s, load {load['load_average_start']:.2f} → "
                f"{load['load_average_end']:.2f}"
            )
        rows.append({"": f"section {name}", "base": cells[0], "new": cells[1]})
    return markdown_table(pd.DataFrame(rows))


def band_text(median: float, low: float, high: float, n: int) -> str:
    if n == 0:
        return "—"
    if n == 1:
        return f"{format_cell(median)} (1 round)"
    return f"{format_cell(median)} [{format_cell(low)}, {format_cell(high)}] ×{n}"


def figures_table(table: pd.DataFrame) -> str:
    shown = pd.DataFrame(
        {
            "section": table.section,
            "figure": table.figure,
            "unit": table.unit,
            "base [band] ×rounds": [
                band_text(r.base, r.base_low, r.base_high, r.base_n) for r in table.itertuples()
            ],
            "new [band] ×rounds": [
                band_text(r.new, r.new_low, r.new_high, r.new_n) for r in table.itertuples()
            ],
            "new / base": [format_cell(r) for r in table.ratio],
            "verdict": [
                f"**{v}**" if v in ("slower", "worse", "faster", "better") else v
                for v in table.verdict
            ],
        }
    )
    return markdown_table(shown)


def counts(table: pd.DataFrame, kind: str) -> str:
    judged = table[table.kind == kind].verdict.value_counts()
    total = int(judged.sum())
    return ", ".join(f"{n} {v}" for v, n in judged.items()) + f" (of {total})"


def markdown(base, new, table: pd.DataFrame, warnings: list[str], threshold: float) -> str:
    timed = table[table.kind == "timed"]
    judged = timed[timed.verdict.isin(["faster", "slower", "unchanged"])]
    unchanged = (judged.verdict == "unchanged").mean() if len(judged) else math.nan
    lines = [
        "## Benchmark comparison",
        "",
        f"- **base**: {base.label} (`{str(base.environment.get('git_commit', '?'))[:12]}`)",
        f"- **new**: {new.label} (`{str(new.environment.get('git_commit', '?'))[:12]}`)",
        f"- **timed figures**: {counts(table, 'timed')}; {unchanged:.0%} of those with bands "
        "unchanged",
        f"- **accuracy figures**: {counts(table, 'accuracy')}",
        f"- **rule**: medians of the rounds; band = the 95 % order-statistic interval of the "
        f"median (the full range up to 5 rounds); faster/slower when the bands are disjoint and "
        f"the medians differ by more than {threshold:g} %, accuracy better/worse when the seed "
        "bands are disjoint",
        "",
    ]
    if warnings:
        lines += ["**Warnings**", ""] + [f"- ⚠ {w}" for w in warnings] + [""]
    lines += ["### Environments", "", environment_table(base.environment, new.environment), ""]
    lines += ["### Figures", "", figures_table(table), ""]
    return "\n".join(lines)


def plot_ratios(table: pd.DataFrame, path: Path) -> Path:
    """Horizontal bars of new / base per figure (log scale), coloured by verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = table[table.ratio.notna() & (table.ratio > 0)]
    height = max(3.0, 0.22 * len(shown) + 1.5)
    fig, ax = plt.subplots(figsize=(10, height))
    labels = [f"{s}: {f}"[:90] for s, f in zip(shown.section, shown.figure, strict=True)]
    colours = [VERDICT_COLOURS.get(v, "tab:blue") for v in shown.verdict]
    ax.barh(range(len(shown)), shown.ratio.apply(math.log2), color=colours)
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ticks = [0.5, 0.8, 1, 1.25, 2]
    ax.set_xticks([math.log2(t) for t in ticks], [f"{t:g}×" for t in ticks])
    ax.set_xlabel("new / base (the figure's own unit; see its 'better' direction)")
    ax.set_title("Benchmark comparison: red slower/worse, green faster/better, grey unchanged")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
