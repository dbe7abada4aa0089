"""Judging typed rows against the rules in ``expectations/``: one GX call per suite per batch.

The suites (``expectations/<kind>.json``) hold every column rule a county's file meets; each
expectation's ``meta`` names its rule, severity, column and the Chinese message template. Rules
that compare columns run on helper columns computed here (``completed_area_to_planned_ratio``
and the like, listed in each suite's ``meta.helper_columns``). Rules a column expectation cannot
express (a project id repeated within a file, the cross-period rules) are plain vectorised
checks below, listed in each suite's ``meta.plain_checks``.

Great Expectations costs ~2.5 s to import and ~0.14 s per validation call, so it is imported
lazily on the first validation and the context, batch definition and suites are cached per
process; a whole batch (every county of one kind and period) goes through in one call with
only the columns the suite reads plus a row key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import string
import threading
import warnings
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from gaibao import contract
from tasks.normalise import FINDING_COLUMNS, ROW_NUMBER, SUBMISSION_ID, empty_findings, period_end

log = logging.getLogger(__name__)

EXPECTATIONS_DIR = Path(__file__).resolve().parent.parent / "expectations"
ROW_KEY = "_row_key"
_EPS = 1e-9
EMPTY_VALUE_ZH = "空"


# --------------------------------------------------------------------------------------------
# Suites and their version


def suite_path(kind: str) -> Path:
    return EXPECTATIONS_DIR / f"{kind}.json"


@cache
def load_suite(kind: str) -> dict[str, Any]:
    """The suite of a kind as the JSON dict in ``expectations/`` (no GX import)."""
    return json.loads(suite_path(kind).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def rules_version() -> str:
    """sha256 over the suite files in ``expectations/`` sorted by name, first 12 hex chars."""
    digest = hashlib.sha256()
    for path in sorted(EXPECTATIONS_DIR.glob("*.json"), key=lambda p: p.name):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def suite_files() -> list[tuple[str, bytes]]:
    """The suite files whose bytes make :func:`rules_version`: (file name, bytes), by name."""
    return [
        (path.name, path.read_bytes())
        for path in sorted(EXPECTATIONS_DIR.glob("*.json"), key=lambda p: p.name)
    ]


def record_rules_in_use(engine: Any) -> None:
    """Store the text of today's rules version in the warehouse if no run has yet
    (``rules_suite``, read by ``gaibao rules show``)."""
    from warehouse.rules import RulesMismatch, record_rules

    try:
        record_rules(engine, rules_version(), suite_files())
    except RulesMismatch as exc:  # the files changed on disk after this process read them
        log.warning("rules version %s not recorded: %s", rules_version(), exc)


def plain_checks(kind: str) -> list[dict[str, Any]]:
    """The rules of a kind that run as plain checks (suite ``meta.plain_checks``)."""
    return list(load_suite(kind)["meta"].get("plain_checks", []))


def plain_message(kind: str, rule: str) -> str:
    for check in plain_checks(kind):
        if check["rule"] == rule:
            return check["message_zh"]
    raise KeyError(f"{kind}: no plain check {rule}")


# --------------------------------------------------------------------------------------------
# Great Expectations, lazily


_GX_STATE: dict[str, Any] = {}
_GX_LOCK = threading.Lock()


def _gx() -> dict[str, Any]:
    """The process-wide GX context and batch definition (imported on first use)."""
    with _GX_LOCK:  # a judging worker warms GX in a thread while its first batch may arrive
        return _gx_locked()


def _gx_locked() -> dict[str, Any]:
    if not _GX_STATE:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig
            from great_expectations.execution_engine import pandas_execution_engine

            # GX fingerprints every in-memory batch under 1 GB (hashing each column, twice per
            # validation: 1.8 s of a national month) for a batch marker we never read. Its module
            # threshold is the only switch; findings are the same without it (tested against the
            # pandas interpreter on every demo file).
            if hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
                pandas_execution_engine.HASH_THRESHOLD = 0
            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            asset = context.data_sources.add_pandas("gaibao").add_dataframe_asset("batch")
            _GX_STATE["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole")
            _GX_STATE["context"] = context
            _GX_STATE["suites"] = {}
    return _GX_STATE


def _gx_suite(kind: str) -> Any:
    state = _gx()
    with _GX_LOCK:
        return _gx_suite_locked(state, kind)


def _gx_suite_locked(state: dict[str, Any], kind: str) -> Any:
    if kind not in state["suites"]:
        from great_expectations.core import ExpectationSuite
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        spec = load_suite(kind)
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # string row_conditions are deprecated in GX 1.9+, still supported
            configs = []
            for i, exp in enumerate(spec["expectations"]):
                meta = {**exp.get("meta", {}), "index": i}
                configs.append(
                    ExpectationConfiguration(
                        type=exp["type"],
                        kwargs=exp["kwargs"],
                        meta=meta,
                        severity=exp.get("severity", "critical"),
                    )
                )
            state["suites"][kind] = ExpectationSuite(
                name=spec["name"],
                expectations=configs,
                meta={k: v for k, v in spec["meta"].items() if k != "plain_checks"},
            )
    return state["suites"][kind]


def warm_gx(kinds: tuple[str, ...] = ("progress", "funding")) -> None:
    """Import GX and build its context and the suites of ``kinds`` now (a judging worker does
    this as it starts, so that its first batch does not wait for it)."""
    for kind in kinds:
        _gx_suite(kind)


def _suite_columns(kind: str) -> list[str]:
    """Every column the suite reads: expectation columns and those named in row conditions."""
    names: list[str] = []
    for exp in load_suite(kind)["expectations"]:
        kwargs = exp["kwargs"]
        names.append(kwargs["column"])
        for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", kwargs.get("row_condition", "")):
            if word not in ("and", "or", "not", "in"):
                names.append(word)
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------
# Helper columns


def helper_columns(kind: str, typed: pd.DataFrame) -> dict[str, pd.Series]:
    """The derived columns the suite of ``kind`` checks (see the suite's meta.helper_columns)."""
    helpers: dict[str, pd.Series] = {}
    if kind == "progress":
        planned = typed["planned_area_m2"]
        completed = typed["completed_area_m2"]
        helpers["completed_area_minus_started_m2"] = completed - typed["started_area_m2"]
        helpers["completed_area_to_planned_ratio"] = _ratio(completed, planned)
        helpers["completed_invest_to_planned_ratio"] = _ratio(
            typed["completed_invest_wan"], typed["planned_invest_wan"]
        )
        central, local = typed["funds_central_wan"], typed["funds_local_wan"]
        funds = central.fillna(0) + local.fillna(0) - typed["completed_invest_wan"]
        helpers["funds_minus_completed_invest_wan"] = funds.where(central.notna() | local.notna())
        done = typed["completed_date"]
        helpers["completed_days_after_start"] = (done - typed["actual_start"]).dt.days.astype("float64")
        helpers["completed_days_after_period_end"] = (done - period_end(typed["period"])).dt.days.astype(
            "float64"
        )
    elif kind == "funding":
        parts = typed[list(contract.FUNDING_PARTS)]
        parts_sum = parts.fillna(0).sum(axis=1)
        helpers["funding_parts_sum_wan"] = parts_sum.where(parts.notna().any(axis=1))
        helpers["funding_parts_minus_total_wan"] = helpers["funding_parts_sum_wan"] - typed["funds_total_wan"]
        helpers["teachers_rural_minus_recruited"] = typed["teachers_rural"].astype("float64") - typed[
            "teachers_recruited"
        ].astype("float64")
    return helpers


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = numerator.to_numpy(dtype="float64") / denominator.to_numpy(dtype="float64")
    ratio[~np.isfinite(ratio) & (numerator.to_numpy(dtype="float64") == 0)] = np.nan  # 0/0
    return pd.Series(ratio, index=numerator.index)


# --------------------------------------------------------------------------------------------
# The batch


def validate_batch(
    kind: str,
    typed: pd.DataFrame,
    previous: pd.DataFrame | None = None,
    raw: pd.DataFrame | None = None,
    unit_factors: dict[str, dict[str, float]] | None = None,
    suite_findings: pd.DataFrame | None = None,
    engine: str = "gx",
) -> pd.DataFrame:
    """Findings (``FINDING_COLUMNS``) of a typed batch: the suite in one GX call, then the plain
    checks. ``previous`` is each county's last accepted rows of the kind (typed, with
    ``county_code`` and ``period``) for the cross-period rules. ``raw`` (the batch as strings,
    row-aligned with ``typed``) lets findings quote values as the clerk wrote them; without it
    typed values are quoted. ``unit_factors`` (per submission) lets messages name the unit of
    the clerk's header when it was not the canonical one. ``engine`` evaluates the suite with
    GX (``"gx"``, the pipeline) or with :func:`run_suite_pandas` (``"pandas"``: the same suite
    files, without GX's 2–3 s import; the clerk's ``gaibao check``)."""
    typed = typed.reset_index(drop=True)
    if raw is not None:
        raw = raw.reset_index(drop=True)
        if len(raw) != len(typed):
            raise ValueError("raw and typed frames of a batch must be row-aligned")
    ctx = _MessageContext(kind, typed, raw, unit_factors or {})
    if suite_findings is None:
        parts = [_suite_findings(kind, typed, ctx, engine)]
    else:
        # The suite's rules judge each row on its own, so findings computed earlier over a
        # larger batch (``suite_findings_of``) hold for these rows: take theirs.
        ctx.helpers = helper_columns(kind, typed) if len(typed) else {}
        mine = suite_findings["submission_id"].isin(pd.unique(typed[SUBMISSION_ID]))
        parts = [suite_findings[mine].reset_index(drop=True)]
    if kind == "progress":
        parts.append(_repeated(kind, typed, ctx, ["project_id"], "E_PROJECT_ID_REPEATED", "project_id"))
    if kind == "plan":
        parts.append(
            _repeated(
                kind, typed, ctx, ["county_code", "plan_cycle"], "E_PLAN_COUNTY_REPEATED", "county_code"
            )
        )
    if previous is not None and len(previous) and kind in contract.CUMULATIVE_COLUMNS:
        parts.extend(_cross_period(kind, typed, previous, ctx))
    findings = (
        pd.concat([p for p in parts if len(p)], ignore_index=True)
        if any(len(p) for p in parts)
        else empty_findings()
    )
    return _finish(findings, typed)


def suite_findings_of(
    kind: str,
    typed: pd.DataFrame,
    raw: pd.DataFrame | None = None,
    unit_factors: dict[str, dict[str, float]] | None = None,
) -> pd.DataFrame:
    """The suite's findings alone (one GX call), for rows that will be judged later in smaller
    batches: a backfill validates every period's rows at once, then judges period by period
    (the cross-period rules need the previous period loaded) reusing these findings."""
    typed = typed.reset_index(drop=True)
    if raw is not None:
        raw = raw.reset_index(drop=True)
    ctx = _MessageContext(kind, typed, raw, unit_factors or {})
    return _suite_findings(kind, typed, ctx)


def _suite_findings(kind: str, typed: pd.DataFrame, ctx: _MessageContext, engine: str = "gx") -> pd.DataFrame:
    if typed.empty:
        return empty_findings()
    spec = load_suite(kind)
    helpers = helper_columns(kind, typed)
    ctx.helpers = helpers
    # The row key is the frame's named index: GX then reports unexpected rows by key without a
    # per-row lookup (with exclude_unexpected_values; ~100 µs per flagged row otherwise).
    index = pd.RangeIndex(len(typed), name=ROW_KEY)
    frame = pd.DataFrame(
        {
            name: _gx_column(helpers[name] if name in helpers else typed[name])
            for name in _suite_columns(kind)
        },
        index=index,
    )
    if engine == "gx":
        results = _run_gx(kind, frame)
    elif engine == "pandas":
        results = run_suite_pandas(kind, frame)
    else:
        raise ValueError(f"unknown engine {engine!r}: expected 'gx' or 'pandas'")
    pieces = []
    for index, keys in results:
        exp = spec["expectations"][index]
        meta = exp["meta"]
        if not len(keys):
            continue
        pieces.append(ctx.findings(keys, meta["rule"], meta["severity"], meta["column"], meta["message_zh"]))
    return pd.concat(pieces, ignore_index=True) if pieces else empty_findings()


def _gx_column(series: pd.Series) -> Any:
    """A column as handed to GX. Repetitive text (statuses, types, school names) becomes
    categorical: GX copies the whole frame for every row condition and null filter and hashes
    it once, and codes are far cheaper to copy and hash than a million strings (the
    expectations read categories as the same text)."""
    if pd.api.types.is_string_dtype(series.dtype) or series.dtype == object:
        values = series.array
        if hasattr(values, "__arrow_array__"):  # pyarrow-backed str: no copy
            arr = pa.array(values)
        else:
            arr = pa.array(series.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        encoded = pc.dictionary_encode(arr)
        if len(encoded.dictionary) > max(1000, len(arr) // 10):
            return series.array  # near-unique (project ids, school codes): categories would not pay
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
        categories = pd.Index(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
        return pd.Categorical.from_codes(codes, categories=categories, validate=False)
    return series.to_numpy()


def _run_gx(kind: str, frame: pd.DataFrame) -> list[tuple[int, np.ndarray]]:
    """Validate ``frame`` against the suite once; the row keys each expectation rejects."""
    state = _gx()
    suite = _gx_suite(kind)
    result_format = {
        "result_format": "COMPLETE",
        "unexpected_index_column_names": [ROW_KEY],
        "return_unexpected_index_query": False,
        "include_unexpected_rows": False,
        "exclude_unexpected_values": True,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = state["batch_definition"].get_batch(batch_parameters={"dataframe": frame})
        outcome = batch.validate(suite, result_format=result_format)
    found: list[tuple[int, np.ndarray]] = []
    for result in outcome.results:
        config = result.expectation_config
        info = result.exception_info or {}
        if info.get("raised_exception"):
            raise RuntimeError(
                f"GX could not evaluate {config.type} on {config.kwargs.get('column')}: {info.get('exception_message')}"
            )
        found.append(
            (int(config.meta["index"]), _unexpected_keys((result.result or {}).get("unexpected_index_list")))
        )
    found.sort(key=lambda item: item[0])
    return found


def _unexpected_keys(index_list: Any) -> np.ndarray:
    """Row keys from ``unexpected_index_list``: one ``{key: [..]}`` dict (values excluded) or
    one ``{key: k, column: v}`` dict per row."""
    if not index_list:
        return np.zeros(0, dtype="int64")
    if len(index_list) == 1 and isinstance(index_list[0].get(ROW_KEY), list):
        return np.asarray(index_list[0][ROW_KEY], dtype="int64")
    return np.fromiter((row[ROW_KEY] for row in index_list), dtype="int64", count=len(index_list))


# --------------------------------------------------------------------------------------------
# Plain checks


# --------------------------------------------------------------------------------------------
# The same suites without GX (the clerk's pre-check)

# GX evaluates a column map expectation over the rows its ``row_condition`` selects
# (``DataFrame.query`` with the pandas parser) and, except for not_be_null, over the non-null
# values of the column; the unexpected rows are reported by the frame's index. The interpreter
# below does the same with pandas masks, for exactly the expectation types the suites use; any
# other type is refused rather than guessed (tests/test_validate_engines.py proves both engines
# give identical findings).


def _between_ok(values: pd.Series, kwargs: dict[str, Any]) -> np.ndarray:
    v = pd.to_numeric(pd.Series(values.to_numpy()), errors="raise").to_numpy(dtype="float64")
    ok = np.ones(len(v), dtype=bool)
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is None and high is None:
        raise ValueError("min_value and max_value cannot both be None")
    if low is not None:
        ok &= (v > low) if kwargs.get("strict_min") else (v >= low)
    if high is not None:
        ok &= (v < high) if kwargs.get("strict_max") else (v <= high)
    return ok


def _lengths_ok(values: pd.Series, kwargs: dict[str, Any]) -> np.ndarray:
    lengths = pd.Series(values.to_numpy()).astype(str).str.len().to_numpy()
    ok = np.ones(len(lengths), dtype=bool)
    if kwargs.get("min_value") is not None:
        ok &= lengths >= kwargs["min_value"]
    if kwargs.get("max_value") is not None:
        ok &= lengths <= kwargs["max_value"]
    return ok


_PANDAS_CHECKS: dict[str, Any] = {
    "expect_column_values_to_be_between": _between_ok,
    "expect_column_values_to_match_regex": lambda values, kw: (
        pd.Series(values.to_numpy()).astype(str).str.contains(kw["regex"], regex=True).to_numpy(dtype=bool)
    ),
    "expect_column_values_to_be_in_set": lambda values, kw: (
        pd.Series(values.to_numpy()).isin(kw["value_set"]).to_numpy(dtype=bool)
    ),
    "expect_column_value_lengths_to_be_between": _lengths_ok,
}
_PANDAS_KWARGS = {"column", "row_condition", "condition_parser", "min_value", "max_value", "strict_min",
                  "strict_max", "regex", "value_set"}  # fmt: skip


def run_suite_pandas(kind: str, frame: pd.DataFrame) -> list[tuple[int, np.ndarray]]:
    """The suite of ``kind`` over ``frame`` with pandas masks: the row keys (``frame.index``)
    each expectation rejects, as :func:`_run_gx` returns them."""
    found: list[tuple[int, np.ndarray]] = []
    for i, exp in enumerate(load_suite(kind)["expectations"]):
        kind_of, kwargs = exp["type"], exp["kwargs"]
        unknown = set(kwargs) - _PANDAS_KWARGS
        if unknown or (kind_of != "expect_column_values_to_not_be_null" and kind_of not in _PANDAS_CHECKS):
            raise NotImplementedError(f"the pandas engine cannot evaluate {kind_of} {sorted(unknown)}")
        data = frame
        condition = kwargs.get("row_condition")
        if condition:
            if kwargs.get("condition_parser") != "pandas":
                raise NotImplementedError(f"row_condition parser {kwargs.get('condition_parser')!r}")
            data = frame.query(condition, parser="pandas")
        column = data[kwargs["column"]]
        if kind_of == "expect_column_values_to_not_be_null":
            bad = column.isnull().to_numpy()
        else:
            present = column.notnull().to_numpy()
            bad = np.zeros(len(column), dtype=bool)
            if present.any():
                bad[present] = ~_PANDAS_CHECKS[kind_of](column[present], kwargs)
        found.append((i, data.index.to_numpy()[bad].astype("int64")))
    return found


def _repeated(
    kind: str, typed: pd.DataFrame, ctx: _MessageContext, key: list[str], rule: str, column: str
) -> pd.DataFrame:
    """Every occurrence of a key repeated within one submission (nulls in ``column`` ignored)."""
    if typed.empty:
        return empty_findings()
    frame = typed[[SUBMISSION_ID, *key, ROW_NUMBER]].copy()
    for name in key:
        frame[name] = frame[name].astype(object).where(frame[name].notna(), "")
    frame = frame[typed[column].notna().to_numpy()]
    dup = frame[frame.duplicated([SUBMISSION_ID, *key], keep=False)]
    if dup.empty:
        return empty_findings()
    rows = dup.groupby([SUBMISSION_ID, *key], sort=False)[ROW_NUMBER].transform(
        lambda s: "、".join(str(v) for v in sorted(s))
    )
    extra = {"rows": rows.to_numpy(dtype=object)}
    return ctx.findings(dup.index.to_numpy(), rule, "error", column, plain_message(kind, rule), extra)


def _cross_period(
    kind: str, typed: pd.DataFrame, previous: pd.DataFrame, ctx: _MessageContext
) -> list[pd.DataFrame]:
    """REGRESSION, STATUS_REGRESSION and DROPPED_PROJECT against the county's last accepted rows."""
    key = ["county_code", "project_id"] if kind == "progress" else ["county_code"]
    cumulative = [c for c in contract.CUMULATIVE_COLUMNS[kind] if c in previous.columns]
    prev_cols = list(dict.fromkeys([*key, *cumulative, "status", "period", "school_name"]))
    prev = previous[[c for c in prev_cols if c in previous.columns]].copy()
    if "period" not in prev.columns:
        prev["period"] = None
    prev = prev.dropna(subset=key).drop_duplicates(subset=key, keep="last")
    current = typed[key].copy()
    current[ROW_KEY] = np.arange(len(typed))
    current = current.dropna(subset=key)
    joined = current.merge(prev, on=key, how="inner", suffixes=("", "_prev"))
    out: list[pd.DataFrame] = []
    prev_period = (
        joined["period"].astype(object).where(joined["period"].notna(), "上期").to_numpy(dtype=object)
    )
    keys = joined[ROW_KEY].to_numpy()
    for name in cumulative:
        now = typed[name].to_numpy(dtype="float64", na_value=np.nan)[keys]
        before = joined[name].to_numpy(dtype="float64", na_value=np.nan)
        fell = now < before - _EPS  # NaN on either side compares False
        if fell.any():
            extra = {"previous": _fmt_values(pd.Series(before[fell])), "previous_period": prev_period[fell]}
            out.append(
                ctx.findings(
                    keys[fell], "REGRESSION", "warning", name, plain_message(kind, "REGRESSION"), extra
                )
            )
    if kind == "progress" and "status" in joined.columns:
        order = contract.STATUS_ORDER
        now_rank = typed["status"].astype(object).map(order).to_numpy(dtype="float64", na_value=np.nan)[keys]
        before_rank = joined["status"].astype(object).map(order).to_numpy(dtype="float64", na_value=np.nan)
        back = now_rank < before_rank
        if back.any():
            extra = {
                "previous_status": joined["status"].to_numpy(dtype=object)[back],
                "previous_period": prev_period[back],
            }
            message = plain_message(kind, "STATUS_REGRESSION")
            out.append(ctx.findings(keys[back], "STATUS_REGRESSION", "warning", "status", message, extra))
    if kind == "progress":
        out.append(_dropped(kind, typed, prev))
    return out


def _dropped(kind: str, typed: pd.DataFrame, prev: pd.DataFrame) -> pd.DataFrame:
    """Projects of the county's last accepted period that a submission no longer lists."""
    subs = typed[[SUBMISSION_ID, "county_code"]].dropna().drop_duplicates()
    expected = subs.merge(prev, on="county_code", how="inner")
    present = typed[[SUBMISSION_ID, "project_id"]].dropna().drop_duplicates()
    present["_present"] = True
    missing = expected.merge(present, on=[SUBMISSION_ID, "project_id"], how="left")
    missing = missing[missing["_present"].isna()]
    if missing.empty:
        return empty_findings()
    school = (
        missing["school_name"] if "school_name" in missing.columns else pd.Series(None, index=missing.index)
    )
    values = {
        "project_id": missing["project_id"].astype(str),
        "school_name": school.astype(object).where(school.notna(), "学校未知").astype(str),
        "previous_period": missing["period"]
        .astype(object)
        .where(missing["period"].notna(), "上期")
        .astype(str),
    }
    message = _render_template(plain_message(kind, "DROPPED_PROJECT"), values, len(missing))
    return pd.DataFrame(
        {
            "submission_id": missing[SUBMISSION_ID].astype(str).to_numpy(),
            "row_number": pd.array([pd.NA] * len(missing), dtype="Int64"),
            "project_id": missing["project_id"].astype(str).to_numpy(),
            "rule": "DROPPED_PROJECT",
            "severity": "warning",
            "column_name": "project_id",
            "value": missing["project_id"].astype(str).to_numpy(),
            "message": message,
            "is_explained": False,
        }
    )


def _finish(findings: pd.DataFrame, typed: pd.DataFrame) -> pd.DataFrame:
    """Mark explained warnings (a note on the row), order and type the columns."""
    if "note" in typed.columns and len(findings):
        note = typed["note"]
        has_note = (note.notna() & (note.astype(str).str.strip() != "")).to_numpy()
        if has_note.any():
            noted = typed.loc[has_note, [SUBMISSION_ID, ROW_NUMBER]].astype(
                {SUBMISSION_ID: str, ROW_NUMBER: "int64"}
            )
            noted = noted.drop_duplicates().assign(_noted=True)
            keys = pd.DataFrame(
                {
                    SUBMISSION_ID: findings["submission_id"].astype(str).to_numpy(),
                    ROW_NUMBER: findings["row_number"].astype("Int64").fillna(-1).astype("int64").to_numpy(),
                }
            )
            marked = keys.merge(noted, on=[SUBMISSION_ID, ROW_NUMBER], how="left")["_noted"]
            warning = (findings["severity"] == "warning").to_numpy()
            findings["is_explained"] = marked.fillna(False).to_numpy(dtype=bool) & warning
    findings = findings.sort_values(
        ["submission_id", "row_number", "rule"], kind="stable", na_position="first"
    )
    findings = findings.reset_index(drop=True)[FINDING_COLUMNS]
    for name in ("project_id", "value", "column_name"):
        findings[name] = _none_for_na(findings[name].to_numpy(dtype=object))
    findings["row_number"] = findings["row_number"].astype("Int64")
    findings["is_explained"] = findings["is_explained"].astype(bool)
    return findings


# --------------------------------------------------------------------------------------------
# Messages


class _MessageContext:
    """Builds finding rows and renders message templates for rows of one batch."""

    def __init__(
        self,
        kind: str,
        typed: pd.DataFrame,
        raw: pd.DataFrame | None,
        unit_factors: dict[str, dict[str, float]],
    ) -> None:
        self.kind = kind
        self.typed = typed
        self.raw = raw
        self.unit_factors = unit_factors
        self.helpers: dict[str, pd.Series] = {}

    def written(self, column: str, keys: np.ndarray) -> np.ndarray:
        """The values of ``column`` at ``keys`` as the clerk wrote them (None where empty)."""
        if self.raw is not None and column in self.raw.columns:
            return _none_for_na(_take(self.raw[column], keys))
        source = self.helpers.get(column)
        if source is None:
            source = self.typed[column]
        shown = _fmt_values(source.iloc[keys])
        return shown

    def quoted(self, column: str, keys: np.ndarray) -> np.ndarray:
        """Another column's value for a message that labels it in the canonical unit: as
        written, except where the clerk's header used another unit (then the converted value)."""
        shown = self.written(column, keys)
        if self.raw is None or not self.unit_factors or column in self.helpers:
            return shown
        sids = _take(self.typed[SUBMISSION_ID], keys)
        converted = [sid for sid, f in self.unit_factors.items() if f.get(column, 1.0) != 1.0]
        if converted:
            mask = np.isin(sids, converted)
            if mask.any():
                shown = shown.copy()
                shown[mask] = _fmt_values(self.typed[column].iloc[keys[mask]])
        return shown

    def label(self, column: str, keys: np.ndarray) -> np.ndarray:
        """The column's Chinese label, with the unit of the clerk's header where it differed."""
        base = contract.label_zh(self.kind, column)
        labels = np.full(len(keys), base, dtype=object)
        try:
            col = contract.column(self.kind, column)
        except KeyError:
            return labels
        if not col.unit or not self.unit_factors:
            return labels
        sids = _take(self.typed[SUBMISSION_ID], keys)
        for sid, factors in self.unit_factors.items():
            factor = factors.get(column)
            if factor is None or factor == 1.0:
                continue
            unit = next((u for u, f in contract.UNIT_FACTORS[col.unit].items() if f == factor), None)
            if unit:
                labels[sids == sid] = f"{col.header_zh}（{unit}）"
        return labels

    def findings(
        self,
        keys: np.ndarray,
        rule: str,
        severity: str,
        column: str,
        template: str,
        extra: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        keys = np.asarray(keys, dtype="int64")
        n = len(keys)
        value = self.written(column, keys) if column in self.typed.columns else np.full(n, None, dtype=object)
        rows = self.typed[ROW_NUMBER].to_numpy()[keys]
        project = (
            _take(self.typed["project_id"], keys)
            if "project_id" in self.typed.columns
            else np.full(n, None, dtype=object)
        )
        values: dict[str, Any] = {"row": rows.astype(str), "column": self.label(column, keys)}
        values["value"] = _display(value)
        for name in _template_fields(template):
            if name in values:
                continue
            if extra and name in extra:
                values[name] = _display(np.asarray(extra[name], dtype=object))
            elif name in self.typed.columns or name in self.helpers:
                values[name] = _display(self.quoted(name, keys))
        return pd.DataFrame(
            {
                "submission_id": _take(self.typed[SUBMISSION_ID], keys),
                "row_number": pd.array(rows, dtype="Int64"),
                "project_id": project,
                "rule": rule,
                "severity": severity,
                "column_name": column,
                "value": value,
                "message": _render_template(template, values, n),
                "is_explained": False,
            }
        )


def _take(series: pd.Series, keys: np.ndarray) -> np.ndarray:
    """``series`` at positions ``keys`` as objects (select first: converting a million
    Arrow strings to objects to pick a few is the slow way round)."""
    return series.iloc[keys].to_numpy(dtype=object)


def _none_for_na(values: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=object, copy=True)
    out[pd.isna(out)] = None
    return out


def _template_fields(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def _render_template(template: str, values: dict[str, Any], n: int) -> np.ndarray:
    """Fill ``{name}`` fields of ``template`` from arrays of length ``n``, column-wise."""
    out = np.full(n, "", dtype=object)
    for literal, field, _, _ in string.Formatter().parse(template):
        if literal:
            out = out + literal
        if field:
            filler = values.get(field)
            if filler is None:
                out = out + "{" + field + "}"
            else:
                out = out + np.asarray(filler, dtype=object).astype(str).astype(object)
    return out


def _display(values: np.ndarray) -> np.ndarray:
    """Values for a message: the text, or 空 where empty."""
    values = np.asarray(values, dtype=object)
    empty = pd.isna(values) | (values == "")
    shown = values.copy()
    shown[empty] = EMPTY_VALUE_ZH
    return shown


def _fmt_values(series: pd.Series) -> np.ndarray:
    """Typed values as short text: 1500.0 → 1500, dates as 2017-06-15, null → None."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        text = series.dt.strftime("%Y-%m-%d")
    elif pd.api.types.is_numeric_dtype(series.dtype):
        numbers = series.astype("float64").round(6)
        text = numbers.astype(str).str.replace(r"\.0$", "", regex=True)
    else:
        text = series.astype(object)
    out = text.to_numpy(dtype=object)
    out[series.isna().to_numpy()] = None
    return out
