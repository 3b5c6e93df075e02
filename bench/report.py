"""The table, the JSON record and the chart of one benchmark run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.harness import Row

HEADERS = ("section", "measure", "ours", "baseline", "ratio", "target", "met?")


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def cells(row: Row) -> tuple[str, ...]:
    met = "—" if row.met is None else ("yes" if row.met else "NO")
    baseline = _number(row.baseline, row.unit)
    if row.baseline_name and row.baseline is not None:
        baseline = f"{baseline} ({row.baseline_name})"
    ratio = "—" if row.ratio is None else f"{row.ratio:.2f}"
    measure = f"{row.measure} [{row.note}]" if row.note else row.measure
    return (row.section, measure, _number(row.ours, row.unit), baseline, ratio, row.target, met)


def table(rows: list[Row]) -> str:
    """A Markdown table: it reads in a terminal and pastes into docs/performance.md."""
    lines = [cells(row) for row in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(HEADERS)]

    def render(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(HEADERS), rule, *(render(line) for line in lines)])


def write(record: dict[str, Any], rows: list[Row], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = record["date"] + ("-quick" if record["quick"] else "")
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    png_path = out / f"{stem}.png"
    chart(rows, png_path, record)
    return json_path, png_path


def chart(rows: list[Row], path: Path, record: dict[str, Any]) -> None:
    """One bar per compared measure: ours over baseline, with the target line where there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = [r for r in rows if r.ratio is not None]
    fig, ax = plt.subplots(figsize=(10, 0.5 * max(len(compared), 2) + 1.5))
    labels = [f"{r.section}: {r.measure}" for r in compared]
    ratios = [r.ratio or 0.0 for r in compared]
    colours = [
        "tab:gray" if r.met is None else ("tab:green" if r.met else "tab:red") for r in compared
    ]
    ax.barh(labels, ratios, color=colours)
    ax.axvline(1.0, color="black", linewidth=0.8)
    # One ratio in the hundreds (search's index size) would flatten every other bar to nothing.
    if ratios and min(ratios) > 0 and max(ratios) / min(ratios) > 100:
        ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel(
        "ours / baseline (same run)" + (", log scale" if ax.get_xscale() == "log" else "")
    )
    ax.set_title(
        f"Ledgerdesk bench {record['date']}{' (quick)' if record['quick'] else ''}, "
        f"{record['machine']['cores']} cores; green: target met, red: not met"
    )
    for y, ratio in enumerate(ratios):
        ax.text(ratio, y, f" {ratio:.2f}", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
