"""A query result as a DataFrame, built column by column.

``pd.DataFrame(result.all(), columns=...)`` hands pandas a list of SQLAlchemy ``Row`` objects,
which it walks one value at a time: 13 s for a million four-column rows on this machine, against
1.9 s when the rows are transposed into columns first (same dtypes, same frame). The ledger reads
a million project rows every national night, so every warehouse read goes through here.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def result_frame(result: Any) -> pd.DataFrame:
    """The rows of a SQLAlchemy ``Result`` as a DataFrame with its column names."""
    columns = list(result.keys())
    rows = result.all()
    if not rows:
        return pd.DataFrame(columns=columns)
    data = zip(*rows, strict=True)
    return pd.DataFrame(dict(zip(columns, (list(c) for c in data), strict=True)), columns=columns)
