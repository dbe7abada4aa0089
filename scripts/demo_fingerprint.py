"""Fingerprint what a gaibao home holds, to show a refactor changed no figure.

    python scripts/demo_fingerprint.py HOME [--out FILE]      # one home -> JSON digests
    python scripts/demo_fingerprint.py --compare HOME_A HOME_B  # exit 1 and list what differs

Two runs of ``gaibao demo`` (``GAIBAO_REPLAY_FILE_TIMES`` replays the files' times) must give
the same fingerprint. What is compared, each as a sha256 of its sorted rows:

- every warehouse table, minus the columns that record *when* or *by which run* something
  happened (``loaded_at``, ``load_id``, ``sent_at``, ``built_at``, ...), which differ between
  any two runs by design;
- the Parquet lake by content (file names carry a load id), per kind and partition;
- the pack's figures (``pack_manifest.figures`` and ``area_figures``, the JSON the pack is
  built from, with its ``figures_sha256``).

It reads the home's SQLite warehouse, or ``GAIBAO_WAREHOUSE_URL`` when that is set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import sqlalchemy as sa

# Columns that say when or in which run a row was written: different in every run.
RUN_COLUMNS = {
    "loaded_at",
    "load_id",
    "sent_at",
    "built_at",
    "marked_at",
    "recorded_at",
    "committed_at",
    "started_at",
    "delivery_id",
    "manifest_id",
    "mark_id",
    "output_dir",
    "location",
    "host",
    "pid",
}
# Tables that hold only run bookkeeping.
RUN_TABLES = {"alembic_version", "lake_journal", "warehouse_load", "mart_dirty"}


def _digest_rows(rows: list[tuple[Any, ...]]) -> str:
    h = hashlib.sha256()
    for row in sorted(rows, key=lambda r: json.dumps(r, default=str, ensure_ascii=False)):
        h.update(json.dumps(row, default=str, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _relative(row: tuple[Any, ...], home: Path) -> tuple[Any, ...]:
    """The home's own path (in ``submission.source``) written as ``$GAIBAO_HOME``."""
    prefix = str(home)
    return tuple(v.replace(prefix, "$GAIBAO_HOME") if isinstance(v, str) else v for v in row)


def fingerprint(home: Path, url: str | None = None) -> dict[str, Any]:
    home = home.resolve()
    engine = sa.create_engine(url or f"sqlite:///{home / 'warehouse.db'}")
    tables: dict[str, Any] = {}
    pack: dict[str, Any] = {}
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for name in sorted(inspector.get_table_names()):
            if name in RUN_TABLES:
                continue
            columns = [c["name"] for c in inspector.get_columns(name) if c["name"] not in RUN_COLUMNS]
            table = sa.table(name, *(sa.column(c) for c in columns))
            rows = [_relative(tuple(r), home) for r in conn.execute(sa.select(*table.c))]
            tables[name] = {"rows": len(rows), "sha256": _digest_rows(rows)}
        if "pack_manifest" in inspector.get_table_names():
            manifest = sa.table(
                "pack_manifest",
                sa.column("period"),
                sa.column("figures_sha256"),
                sa.column("figures"),
                sa.column("area_figures"),
            )
            for period, figures_sha, figures, areas in conn.execute(sa.select(*manifest.c)):
                pack[str(period)] = {
                    "figures_sha256": figures_sha,
                    "figures": hashlib.sha256(str(figures).encode()).hexdigest(),
                    "area_figures": hashlib.sha256(str(areas).encode()).hexdigest(),
                }
    engine.dispose()
    lake: dict[str, Any] = {}
    lake_root = home / "lake"
    for kind_dir in sorted(p for p in lake_root.glob("*") if p.is_dir() and not p.name.startswith("_")):
        for part in sorted(p for p in kind_dir.rglob("county=*") if p.is_dir()):
            rows: list[tuple[Any, ...]] = []
            for f in sorted(part.glob("*.parquet")):
                rows.extend(tuple(r.values()) for r in pq.read_table(f).to_pylist())
            lake[str(part.relative_to(lake_root))] = {"rows": len(rows), "sha256": _digest_rows(rows)}
    return {"tables": tables, "lake": lake, "pack": pack}


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    diffs = []
    for section in ("tables", "lake", "pack"):
        keys = sorted(set(a[section]) | set(b[section]))
        for key in keys:
            if a[section].get(key) != b[section].get(key):
                diffs.append(f"{section}/{key}: {a[section].get(key)} != {b[section].get(key)}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("homes", nargs="+", type=Path)
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.compare:
        if len(args.homes) != 2:
            parser.error("--compare takes two homes")
        diffs = compare(fingerprint(args.homes[0]), fingerprint(args.homes[1]))
        for line in diffs:
            print(line)
        print("identical" if not diffs else f"{len(diffs)} differences")
        return 1 if diffs else 0
    result = json.dumps(fingerprint(args.homes[0]), indent=1, ensure_ascii=False)
    if args.out:
        args.out.write_text(result + "\n", encoding="utf-8")
    else:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
