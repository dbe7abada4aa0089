"""Every prefect.yaml entrypoint imports, and its parameters are the flow's parameters."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.schedules import CronSchedule

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]


def _flow(entrypoint: str):
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_entrypoint_imports_and_parameters_match(deployment: dict) -> None:
    flow = _flow(deployment["entrypoint"])
    signature = inspect.signature(flow.fn)
    unknown = set(deployment.get("parameters") or {}) - set(signature.parameters)
    assert not unknown, f"{deployment['name']} passes parameters the flow does not take: {unknown}"
    required = {n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty}
    scheduled = [s for s in deployment.get("schedules") or [] if s]
    # A scheduled run gets only the deployment's parameters: every required one must be there.
    if scheduled:
        assert required <= set(deployment.get("parameters") or {})
    for schedule in scheduled:
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # raises when invalid
        assert schedule["timezone"] == "Asia/Shanghai"


def test_schedules_are_the_documented_ones() -> None:
    by_name = {d["name"]: d for d in DEPLOYMENTS}
    assert by_name["nightly"]["schedules"][0]["cron"] == "30 1 * * *"
    assert by_name["monthly-pack"]["schedules"][0]["cron"] == "0 7 6 * *"
    assert not by_name["backfill"]["schedules"]
    for d in DEPLOYMENTS:
        assert d["concurrency_limit"]["limit"] == 1
