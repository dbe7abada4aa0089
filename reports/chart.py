"""The chart of county completion against plan, as PNG bytes (matplotlib, Agg backend).

Chinese labels need a CJK font: the first one ``fc-list :lang=zh`` names is used (Debian's
``fonts-wqy-microhei`` in the test set-up). Without one the chart still renders, labelled by
county code and without Chinese text, so no glyph boxes appear.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from functools import lru_cache

import pandas as pd

log = logging.getLogger(__name__)

MAX_LABELLED = 120  # above this many counties the bars carry no names


@lru_cache(maxsize=1)
def cjk_font_path() -> str | None:
    """A font file covering Chinese, or None."""
    if not shutil.which("fc-list"):
        return None
    try:
        out = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    files = sorted(line.split(":")[0].strip() for line in out.splitlines() if line.strip())
    preferred = [f for f in files if "wqy" in f.lower() or "noto" in f.lower()]
    for path in preferred + files:
        if path.lower().endswith((".ttf", ".ttc", ".otf")):
            return path
    return None


def county_completion_png(table: pd.DataFrame, title_zh: str) -> bytes:
    """Bars of each county's area completion rate (sorted), the plan at 100%, city average marks.

    ``table`` columns: county_code, county_name, area_completion_rate, equipment_completion_rate.
    """
    # matplotlib is imported here, not with the module: the nightly receipts import the pack's
    # helpers and never draw (importing pyplot costs about a second).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    font_path = cjk_font_path()
    prop = None
    if font_path:
        font_manager.fontManager.addfont(font_path)
        prop = font_manager.FontProperties(fname=font_path)
    df = table.assign(
        _area=table["area_completion_rate"].astype(float),
        _eq=table["equipment_completion_rate"].astype(float),
    ).sort_values(["_area", "county_code"], ascending=[False, True], na_position="last")
    n = len(df)
    labelled = 0 < n <= MAX_LABELLED
    width = 12 if n <= 60 else 16
    fig, ax = plt.subplots(figsize=(width, 5.5), dpi=100)
    try:
        x = range(n)
        area = (df["_area"].fillna(0) * 100).to_numpy()
        colors = (
            ["#c0392b" if v < 60 else "#e67e22" if v < 90 else "#2e86c1" for v in area] if labelled else []
        )
        if labelled:
            ax.bar(x, area, width=0.8, color=colors, linewidth=0, label="校舍改造面积完成率")
        else:  # thousands of counties: one filled profile instead of thousands of bars
            ax.fill_between(
                list(x), area, step="mid", color="#2e86c1", linewidth=0, label="校舍改造面积完成率"
            )
            ax.axhline(60, color="#c0392b", linewidth=0.8, linestyle=":")
        if n:
            ax.plot(
                x,
                (df["_eq"] * 100).to_numpy(),
                linestyle="none",
                marker="." if labelled else ",",
                color="#27ae60",
                label="设备购置完成率",
            )
        ax.axhline(100, color="#555555", linewidth=1, linestyle="--", label="五年规划（100%）")
        ax.set_xlim(-0.6, max(n, 1) - 0.4)
        ax.set_ylim(0, max(110.0, float(area.max()) + 10 if n else 110.0))
        if labelled:
            names = df["county_name"].astype(str) if prop else df["county_code"].astype(str)
            ax.set_xticks(list(x))
            ax.set_xticklabels(names, rotation=90, fontsize=7, fontproperties=prop)
        else:
            ax.set_xticks([])
        if prop:
            ax.set_title(title_zh, fontproperties=prop, fontsize=13)
            ax.set_ylabel("完成率（%）", fontproperties=prop)
            ax.legend(prop=prop, loc="upper right", fontsize=8)
        else:
            ax.set_title("County completion vs plan (%)")
            ax.set_ylabel("%")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)
