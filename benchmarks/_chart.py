"""A bar chart (PNG) of one benchmark run, written next to the figures it shows.

matplotlib is in the ``bench`` dependency group; without it the chart is skipped with a
note, and the printed figures stand alone.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

CHARTS = Path(__file__).resolve().parent.parent / "docs" / "_static" / "benchmarks"


def bar_chart(
    name: str,
    title: str,
    figures: Mapping[str, float],
    *,
    unit: str = "jobs/s",
    highlight: str = "hyperqueue",
) -> Path | None:
    """Draw ``figures`` (label -> value) as horizontal bars into ``CHARTS/name.png``.

    Bars whose label starts with ``highlight`` are drawn in the accent colour, so ours
    stand out from the ceilings and peers measured in the same run.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(no chart: matplotlib is not installed; pip install matplotlib for {name}.png)")
        return None
    labels = list(figures)[::-1]
    values = [figures[label] for label in labels]
    colours = ["#2563eb" if label.startswith(highlight) else "#9ca3af" for label in labels]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(labels) + 1.2))
    bars = ax.barh(labels, values, color=colours)
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3, fontsize=8)
    ax.set_xlabel(unit)
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.margins(x=0.15)
    fig.tight_layout()
    CHARTS.mkdir(parents=True, exist_ok=True)
    path = CHARTS / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"chart: {path}")
    return path
