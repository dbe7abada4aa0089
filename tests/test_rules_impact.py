"""``gaibao rules impact``: re-judge the archive with changed rules, list exactly what changes.

The known answer: load part of the demo (four counties, 2018-11 and 2018-12), tighten the W rule
"completed area over 1.5 × planned area" to 1.05 in a copy of the suites, and compute with pandas
from fact_progress which accepted rows have a ratio in (1.05, 1.5]: those, and only those, are
listed as newly failing (plus rows of submissions not in fact_progress, checked separately).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tasks.impact import NEWLY_FAILS, NEWLY_PASSES, _csv_safe, compare_findings

ROOT = Path(__file__).resolve().parents[1]
COUNTIES = ["340321", "340322", "341221", "341222"]
PERIODS = ("2018-11", "2018-12")
TIGHT = 1.05
RULE = "W_COMPLETED_AREA_OVER_PLAN"


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse holding part of the demo, loaded by the same plain functions as the flows."""
    from gaibao.demo import generate_demo
    from gaibao.settings import get_settings
    from tasks import ingest
    from tasks.plan import load_plan_file
    from warehouse.store import Warehouse

    home = tmp_path_factory.mktemp("impact") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GAIBAO_HOME", str(home))
        mp.delenv("GAIBAO_WAREHOUSE_URL", raising=False)
        mp.delenv("GAIBAO_SOURCES", raising=False)
        get_settings.cache_clear()
        settings = get_settings()
        manifest = generate_demo(home)
        with Warehouse.from_settings(settings) as wh:
            wh.upgrade()
            ingest.seed_divisions(wh)
            assert load_plan_file(wh, manifest.plan_file).ok
            for period in ingest.period_range(*PERIODS):
                plan = ingest.plan_run(wh, settings, period, COUNTIES, False)
                chunks = [ingest.fetch_and_read(c, period, settings, plan.known) for c in plan.chunks]
                gathered = ingest.gather_period(settings, period, chunks, plan.archived)
                ingest.load_judged(wh, ingest.judge_period(wh, settings, gathered))
    get_settings.cache_clear()
    return home


@pytest.fixture
def impact_env(demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from gaibao.settings import get_settings

    monkeypatch.setenv("GAIBAO_HOME", str(demo_home))
    monkeypatch.delenv("GAIBAO_WAREHOUSE_URL", raising=False)
    get_settings.cache_clear()
    yield demo_home
    get_settings.cache_clear()


def _state(home: Path) -> dict[str, str]:
    """A fingerprint of everything the warehouse holds: the database and every file of the lake."""
    out = {"warehouse.db": hashlib.sha256((home / "warehouse.db").read_bytes()).hexdigest()}
    for sub in ("lake", "archive"):
        for path in sorted((home / sub).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _impact(args: list[str]) -> tuple[str, list[dict[str, str]]]:
    from gaibao.cli import app

    result = CliRunner().invoke(app, ["rules", "impact", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = Path(args[args.index("--out") + 1])
    with out.open(encoding="utf-8-sig", newline="") as fh:
        return result.output, list(csv.DictReader(fh))


def _tightened_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "expectations", rules)
    suite = json.loads((rules / "progress.json").read_text(encoding="utf-8"))
    (target,) = [e for e in suite["expectations"] if e["meta"]["rule"] == RULE]
    assert target["kwargs"]["max_value"] == 1.5
    target["kwargs"]["max_value"] = TIGHT
    (rules / "progress.json").write_text(json.dumps(suite, ensure_ascii=False, indent=2), encoding="utf-8")
    return rules


def _expected_from_facts(home: Path, since: str | None = None) -> set[tuple[str, int]]:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{home / 'warehouse.db'}")
    facts = pd.read_sql("SELECT submission_id, period, row_number, planned_area_m2, completed_area_m2 FROM fact_progress", engine)
    engine.dispose()
    if since:
        facts = facts[facts["period"] >= since]
    ratio = facts["completed_area_m2"] / facts["planned_area_m2"]
    hit = (ratio > TIGHT) & (ratio <= 1.5)
    return set(zip(facts.loc[hit, "submission_id"], facts.loc[hit, "row_number"].astype(int), strict=True))


def test_unchanged_rules_list_nothing(impact_env: Path, tmp_path: Path) -> None:
    before = _state(impact_env)
    out_csv = tmp_path / "same.csv"
    output, rows = _impact(["--out", str(out_csv)])
    assert rows == []
    assert "没有变化" in output
    assert "重新校验" in output and "未写入仓库" in output
    assert _state(impact_env) == before


@pytest.mark.parametrize("since", [None, "2018-12"])
def test_tightened_rule_lists_exactly_the_affected_rows(impact_env: Path, tmp_path: Path, since: str | None) -> None:
    import sqlalchemy as sa

    rules = _tightened_rules(tmp_path)
    before = _state(impact_env)
    out_csv = tmp_path / "tight.csv"
    output, rows = _impact(["--rules", str(rules), "--out", str(out_csv), *(["--since", since] if since else [])])
    assert _state(impact_env) == before, "rules impact wrote to the warehouse"

    expected = _expected_from_facts(impact_env, since)
    assert len(expected) > 20  # the demo has many rows between 1.05 and 1.5 × plan
    assert {r["rule"] for r in rows} == {RULE}
    assert {r["change"] for r in rows} == {NEWLY_FAILS}
    assert {r["column"] for r in rows} == {"completed_area_m2"}
    if since:
        assert {r["period"] for r in rows} == {since}

    engine = sa.create_engine(f"sqlite:///{impact_env / 'warehouse.db'}")
    subs = pd.read_sql("SELECT submission_id, status FROM submission", engine)
    errors = pd.read_sql("SELECT submission_id, row_number FROM dq_issue WHERE severity = 'error'", engine)
    engine.dispose()
    current = set(subs.loc[subs["status"] == "accepted", "submission_id"])
    rejected = set(zip(errors["submission_id"], errors["row_number"].dropna().astype(int), strict=False))
    listed = {(r["submission_id"], int(r["row_number"])) for r in rows}
    in_facts = {key for key in listed if key[0] in current and key not in rejected}
    assert in_facts == expected
    # anything else listed is a row the warehouse does not hold: rejected rows or older files
    assert all(key in rejected or key[0] not in current for key in listed - in_facts)

    # the row details: county, period, project and the value as written
    sample = next(r for r in rows if (r["submission_id"], int(r["row_number"])) in expected)
    assert sample["county_code"] in COUNTIES and sample["project_id"] and float(sample["value"].replace(",", "")) > 0

    # the console summary: per rule and per county
    assert f"{RULE}" in output
    per_county = pd.DataFrame(rows).groupby("county_code").size()
    for county, n in per_county.items():
        assert any(line.startswith(county) and line.split()[-2:] == [str(n), "0"] for line in output.splitlines())
    assert any(line.startswith(RULE) and line.split()[-2:] == [str(len(rows)), "0"] for line in output.splitlines())


def _findings(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["submission_id", "row_number", "project_id", "rule", "severity", "column_name", "value"]
    )


SUBS = pd.DataFrame(
    {"submission_id": ["s1", "s2"], "county_code": ["340321", "341222"], "period": ["2018-12", "2018-12"], "kind": ["progress"] * 2}
)


@pytest.mark.parametrize(
    ("recorded", "current", "expected"),
    [
        ([], [], []),
        ([("s1", 3, "P", "W_X", "warning", "c", "9")], [("s1", 3, "P", "W_X", "warning", "c", "9")], []),
        ([], [("s1", 3, "P", "W_X", "warning", "c", "9")], [("s1", 3, "W_X", NEWLY_FAILS)]),
        ([("s2", 4, "Q", "E_Y", "error", "c", "1")], [], [("s2", 4, "E_Y", NEWLY_PASSES)]),
        # same row, other rule: one passes, one fails
        (
            [("s1", 3, "P", "W_X", "warning", "c", "9")],
            [("s1", 3, "P", "E_Z", "error", "c", "9")],
            [("s1", 3, "E_Z", NEWLY_FAILS), ("s1", 3, "W_X", NEWLY_PASSES)],
        ),
        # file-level findings (no row number) compare too
        ([("s2", None, None, "TOTAL_MISMATCH", "warning", "c", "5")], [], [("s2", None, "TOTAL_MISMATCH", NEWLY_PASSES)]),
    ],
)
def test_compare_findings(recorded: list, current: list, expected: list) -> None:
    changes = compare_findings(_findings(recorded), _findings(current), SUBS)
    got = [
        (r.submission_id, None if pd.isna(r.row_number) else int(r.row_number), r.rule, r.change)
        for r in changes.itertuples(index=False)
    ]
    assert sorted(got, key=str) == sorted(expected, key=str)
    assert set(changes["county_code"]) <= {"340321", "341222"}


def test_compare_findings_never_carries_personal_data() -> None:
    changes = compare_findings(_findings([]), _findings([("s1", 2, "P", "E_PHONE", "error", "phone", "0552-1234567")]), SUBS)
    assert changes["value"].isna().all()


@pytest.mark.parametrize(
    ("value", "cell"),
    [("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"), ("+1+2", "'+1+2"), ("@sum", "'@sum"), ("-3.5", "-3.5"), ("1,234", "1,234"), (None, ""), ("怀远县", "怀远县")],
)
def test_csv_cells_never_run_as_formulas(value: str | None, cell: str) -> None:
    assert _csv_safe(value) == cell
