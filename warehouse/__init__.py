"""The warehouse: raw archive, Parquet lake, SQL tables (Alembic), marts. See ``warehouse.store.Warehouse``."""

from __future__ import annotations

from warehouse.archive import Archive
from warehouse.store import LoadResult, Warehouse, make_submission_id

__all__ = ["Archive", "LoadResult", "Warehouse", "make_submission_id"]
