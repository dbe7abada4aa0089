"""Administrative division codes (GB/T 2260): counties and the cities that group them."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

DIVISION_COLUMNS = ["county_code", "county_name", "city_code", "city_name"]


def read_divisions(path: Path | str | None = None) -> pd.DataFrame:
    """Read a divisions CSV (county_code, county_name, city_code, city_name), codes as text.

    Without a path, the bundled Anhui reference (104 county-level units) is read.
    """
    if path is None:
        with resources.files("gaibao.data").joinpath("anhui_divisions.csv").open("rb") as fh:
            frame = pd.read_csv(fh, dtype=str)
    else:
        frame = pd.read_csv(path, dtype=str)
    missing = set(DIVISION_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"divisions file lacks columns: {sorted(missing)}")
    return frame[DIVISION_COLUMNS].copy()


@lru_cache(maxsize=1)
def bundled_divisions() -> pd.DataFrame:
    return read_divisions()
