"""The pandas interpreter of the suites (``gaibao check``) and GX give identical findings.

Both engines read the same suite files; the pipeline uses GX, the clerk's pre-check the
interpreter (no 2–3 s GX import). Proven here on every rule test case and on the whole demo
data (all 720 demo files, one batch per kind, as the nightly run validates them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import test_rules as rules  # the rule tests' cases (tests/ is on sys.path under pytest)

from tasks.judge import judge_file
from tasks.normalise import concat_returns, normalise_frame
from tasks.read import read_return
from tasks.validate import (
    ROW_KEY,
    _gx_column,
    _run_gx,
    _suite_columns,
    helper_columns,
    load_suite,
    run_suite_pandas,
    validate_batch,
)

pytestmark = pytest.mark.xdist_group("engines")


def _findings(kind: str, items, previous: pd.DataFrame | None, engine: str) -> pd.DataFrame:
    raw, factors = concat_returns(kind, items)
    typed, _ = normalise_frame(kind, raw, factors)
    found = validate_batch(kind, typed, previous, raw=raw, unit_factors=factors, engine=engine)
    return found.sort_values(["submission_id", "row_number", "rule", "column_name"], kind="stable").reset_index(
        drop=True
    )


def _suite_keys(kind: str, items) -> tuple[list[tuple[int, np.ndarray]], list[tuple[int, np.ndarray]]]:
    """Each expectation's rejected rows under both engines, on the frame GX is given."""
    raw, factors = concat_returns(kind, items)
    typed, _ = normalise_frame(kind, raw, factors)
    helpers = helper_columns(kind, typed)
    frame = pd.DataFrame(
        {n: _gx_column(helpers[n] if n in helpers else typed[n]) for n in _suite_columns(kind)},
        index=pd.RangeIndex(len(typed), name=ROW_KEY),
    )
    return _run_gx(kind, frame), run_suite_pandas(kind, frame)


def assert_same(kind: str, items, previous: pd.DataFrame | None = None) -> pd.DataFrame:
    gx_keys, pandas_keys = _suite_keys(kind, items)
    assert len(gx_keys) == len(pandas_keys) == len(load_suite(kind)["expectations"])
    for (i, a), (j, b) in zip(gx_keys, pandas_keys, strict=True):
        assert i == j
        assert np.array_equal(np.sort(a), np.sort(b)), (kind, i, load_suite(kind)["expectations"][i]["kwargs"])
    gx = _findings(kind, items, previous, "gx")
    pandas = _findings(kind, items, previous, "pandas")
    pd.testing.assert_frame_equal(gx, pandas)
    return gx


def _rule_case_files() -> dict[str, tuple[dict[str, list[dict]], pd.DataFrame | None, dict]]:
    progress: dict[str, list[dict]] = {}
    for i, (_, base, change, _, _) in enumerate(rules.PROGRESS_CASES):
        progress[f"case{i}"] = [{**base, "project_id": "OK-1"}, rules._bad_row(base, change)]
    for name, base in rules.GOOD_BASES.items():
        progress[f"good-{name}"] = [base]
    for rule, change in rules.WARNINGS_TO_EXPLAIN.items():
        progress[f"note-{rule}"] = [
            {**rules.GOOD_PROGRESS, **change},
            {**rules.GOOD_PROGRESS, **change, "project_id": "HY-2", "note": "追加扩建"},
        ]
    progress["unit"] = [{**rules.GOOD_PROGRESS, "funds_central_wan": "-10000", "funds_local_wan": "0"}]
    funding: dict[str, list[dict]] = {}
    for i, (_, change, _, _) in enumerate(rules.FUNDING_CASES):
        funding[f"case{i}"] = [
            {**rules.GOOD_FUNDING, "county_code": f"35{i:04d}"},
            {**rules.GOOD_FUNDING, **change, "county_code": f"35{i:04d}"},
        ]
    funding["good"] = [rules.GOOD_FUNDING]
    plan = {
        "plan": [
            {"county_code": "340321", "plan_area_m2": "1000", "plan_equipment_wan": "10"},
            {"county_code": "34032", "plan_area_m2": "-1", "plan_equipment_wan": None},
            {"county_code": None, "plan_area_m2": None, "plan_equipment_wan": "-2"},
        ]
    }
    return {
        "progress": (progress, None, {"unit": {"funds_central_wan": 1e-4}}),
        "funding": (funding, None, {}),
        "plan": (plan, None, {}),
    }


@pytest.mark.parametrize("kind", ["progress", "funding", "plan"])
def test_engines_agree_on_the_rule_cases(kind: str) -> None:
    files, previous, factors = _rule_case_files()[kind]
    items = [(sid, rules.parsed(kind, rows, factors.get(sid))) for sid, rows in files.items()]
    found = assert_same(kind, items, previous)
    assert not found.empty  # the cases break rules: the comparison is not between two empty tables


@pytest.fixture(scope="module")
def demo_items(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    from gaibao.demo import generate_demo

    home = tmp_path_factory.mktemp("demo")
    generate_demo(home)
    files = sorted(p for p in (home / "inbox").rglob("*") if p.is_file())
    by_kind: dict[str, list] = {}
    for path in files:
        parsed = read_return(path.read_bytes(), path.name)
        if parsed.refusal is None:
            by_kind.setdefault(parsed.kind, []).append((str(path.relative_to(home)), parsed))
    by_kind["_files"] = files
    return by_kind


@pytest.mark.parametrize("kind", ["progress", "funding"])
def test_engines_agree_on_the_whole_demo(demo_items: dict[str, list], kind: str) -> None:
    assert len(demo_items["_files"]) == 720
    found = assert_same(kind, demo_items[kind])
    if kind == "progress":
        assert (found["severity"] == "error").any() and (found["severity"] == "warning").any()


def test_judge_file_engines_agree_on_demo_files(demo_items: dict[str, list]) -> None:
    """Through the clerk's path, file by file: demo files with findings and a clean one."""
    files: list[Path] = demo_items["_files"]
    chosen = files[:: max(1, len(files) // 6)]
    for path in chosen:
        content = path.read_bytes()
        a = judge_file(content, path.name, engine="gx")
        b = judge_file(content, path.name, engine="pandas")
        pd.testing.assert_frame_equal(a.issues.reset_index(drop=True), b.issues.reset_index(drop=True))
        cols = [c for c in a.submissions.columns if c != "received_at"]
        pd.testing.assert_frame_equal(a.submissions[cols], b.submissions[cols])
