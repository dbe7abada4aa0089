#!/usr/bin/env bash
# Verify the Prefect deployments end to end, on a throwaway Prefect server and GAIBAO_HOME:
#
#   1. start a real Prefect server on loopback with its own PREFECT_HOME, wait for /api/health
#   2. create the process work pool gaibao-process
#   3. prefect deploy --all from the project root; read the deployments back (schedules,
#      concurrency limit 1 with ENQUEUE)
#   4. start a worker on the pool (it hands GAIBAO_HOME / GAIBAO_WAREHOUSE_URL to its flow runs)
#   5. generate the demo returns, load the plan, trigger backfill for one demo month
#   6. wait for the flow run to complete (fail on Failed/Crashed or a timeout)
#   7. check the warehouse: accepted submissions, fact_progress rows, mart rows
#
# Every process it starts is stopped on exit, success or failure. Temporary directories are
# removed unless KEEP_TMP=1. Usage (from anywhere):  scripts/verify_deployments.sh
# Knobs: VERIFY_PERIOD (default 2018-12), VERIFY_TIMEOUT_S (per wait, default 240),
#        VERIFY_OVERLAP=1 (also trigger two runs at once and prove they ran one after the other).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PERIOD="${VERIFY_PERIOD:-2018-12}"
TIMEOUT_S="${VERIFY_TIMEOUT_S:-240}"
OVERLAP="${VERIFY_OVERLAP:-0}"
T0=$SECONDS

step() { printf '[verify %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
ok() { printf '[verify %3ds] OK   %s\n' "$((SECONDS - T0))" "$*"; }
fail() {
    printf '[verify %3ds] FAIL %s\n' "$((SECONDS - T0))" "$*" >&2
    exit 1
}

# -- bootstrap -------------------------------------------------------------------------------
if [[ ! -x .venv/bin/python || ! -x .venv/bin/prefect ]]; then
    step "no .venv: make install"
    make install
fi
PY="$ROOT/.venv/bin/python"
PREFECT="$ROOT/.venv/bin/prefect"
GAIBAO="$ROOT/.venv/bin/gaibao"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gaibao-verify.XXXXXX")"
PIDS=()  # process-group leaders we started (each runs under setsid)

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    local pid alive
    for _ in $(seq 1 15); do  # up to 3 s for all of them to stop, then SIGKILL what is left
        alive=0
        for pid in "${PIDS[@]}"; do
            kill -0 -- "-$pid" 2>/dev/null && alive=1
        done
        ((alive)) || break
        sleep 0.2
    done
    for pid in "${PIDS[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || true
        { wait "$pid"; } 2>/dev/null || true
    done
    if ((rc != 0)); then
        for log in "$WORK"/server.log "$WORK"/worker.log; do
            [[ -f "$log" ]] || continue
            echo "---- last lines of $log" >&2
            tail -n 40 "$log" >&2 || true
        done
    fi
    if [[ "${KEEP_TMP:-0}" == "1" ]]; then
        echo "[verify] kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    if ((rc == 0)); then
        step "stopped everything it started; all checks passed"
    else
        echo "[verify] stopped everything it started; FAILED (exit $rc)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOG CMD...: run CMD in its own session (so the whole tree can be stopped)
start_bg() {
    local log="$1"
    shift
    setsid "$@" >"$log" 2>&1 </dev/null &
    PIDS+=("$!")
}

# -- environment: nothing leaks in from the caller's Prefect profile or GAIBAO settings --------
health() {
    "$PY" -c 'import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode().strip())
except Exception:
    print("")' "$PREFECT_API_URL/health" 2>/dev/null
}
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
export PREFECT_HOME="$WORK/prefect"
export PREFECT_PROFILES_PATH="$PREFECT_HOME/profiles.toml"
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
unset PREFECT_API_KEY PREFECT_PROFILE || true
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_LEVEL=WARNING
export PREFECT_SERVER_LOGGING_LEVEL=WARNING
export PREFECT_DEPLOYMENTS_CLEAR_SCHEDULES_ON_EMPTY=true
export PREFECT_WORKER_QUERY_SECONDS=1
export PREFECT_WORKER_PREFETCH_SECONDS=5
export GX_ANALYTICS_ENABLED=false
export GAIBAO_HOME="$WORK/home"
export GAIBAO_WAREHOUSE_URL="sqlite:///$GAIBAO_HOME/warehouse.db"
export GAIBAO_MAIL_MODE=outbox
unset GAIBAO_SOURCES || true
mkdir -p "$PREFECT_HOME" "$GAIBAO_HOME"

# -- 1. server ---------------------------------------------------------------------------------
step "1/7 start Prefect server on 127.0.0.1:$PORT (PREFECT_HOME=$PREFECT_HOME)"
start_bg "$WORK/server.log" "$PREFECT" server start --host 127.0.0.1 --port "$PORT"
SERVER_PID="${PIDS[-1]}"
# The demo returns and the plan do not need Prefect: prepare them while the server starts.
step "5a/7 generate the demo returns into GAIBAO_HOME=$GAIBAO_HOME and load the plan (background)"
start_bg "$WORK/demo.log" bash -c '
    set -euo pipefail
    plan="$("$1" -c "import sys; from gaibao.demo import generate_demo; print(generate_demo(sys.argv[1]).plan_file)" "$GAIBAO_HOME")"
    echo "demo returns: $(find "$GAIBAO_HOME/inbox" -type f | wc -l) files; plan file: $plan"
    "$2" plan load "$plan"
' demo "$PY" "$GAIBAO"
DEMO_PID="${PIDS[-1]}"

deadline=$((SECONDS + TIMEOUT_S))
until [[ "$(health)" == "true" ]]; do
    kill -0 "$SERVER_PID" 2>/dev/null || fail "1/7 the Prefect server exited (see $WORK/server.log)"
    ((SECONDS < deadline)) || fail "1/7 no answer from $PREFECT_API_URL/health within ${TIMEOUT_S}s"
    sleep 0.5
done
ok "1/7 server healthy: $PREFECT_API_URL/health = true"

# -- 2. work pool ------------------------------------------------------------------------------
step "2/7 create the process work pool gaibao-process"
"$PREFECT" --no-prompt work-pool create gaibao-process --type process >"$WORK/pool.log" 2>&1 ||
    { cat "$WORK/pool.log" >&2; fail "2/7 work-pool create"; }
ok "2/7 work pool gaibao-process (type process) created"

# The worker starts (and registers) while the deployments are being created.
step "4/7 start a worker on gaibao-process (background)"
start_bg "$WORK/worker.log" "$PREFECT" --no-prompt worker start --pool gaibao-process --type process --name verify-worker
WORKER_PID="${PIDS[-1]}"

# -- 3. deploy ---------------------------------------------------------------------------------
step "3/7 prefect deploy --all (from $ROOT)"
"$PREFECT" --no-prompt deploy --all >"$WORK/deploy.log" 2>&1 || { cat "$WORK/deploy.log" >&2; fail "3/7 prefect deploy --all"; }
"$PY" - <<'EOF' || fail "3/7 deployments read back do not match prefect.yaml"
import asyncio

from prefect.client.orchestration import get_client

EXPECTED = {
    "nightly-ingest/nightly": "30 1 * * *",
    "monthly-meeting-pack/monthly-pack": "0 7 6 * *",
    "backfill/backfill": None,
}


async def main() -> None:
    async with get_client() as client:
        for name, cron in EXPECTED.items():
            d = await client.read_deployment_by_name(name)
            assert d.work_pool_name == "gaibao-process", (name, d.work_pool_name)
            crons = [(s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules]
            assert crons == ([(cron, "Asia/Shanghai", True)] if cron else []), (name, crons)
            gcl = d.global_concurrency_limit
            strategy = d.concurrency_options.collision_strategy if d.concurrency_options else None
            assert gcl is not None and gcl.limit == 1, (name, gcl)
            assert str(getattr(strategy, "value", strategy)) == "ENQUEUE", (name, strategy)
            pull = d.pull_steps or []
            print(
                f"  {name}: schedule {crons[0][0] + ' ' + crons[0][1] if crons else 'none'}, "
                f"concurrency limit {gcl.limit} ({getattr(strategy, 'value', strategy)}), "
                f"work dir {pull[0]['prefect.deployments.steps.set_working_directory']['directory'] if pull else '?'}"
            )


asyncio.run(main())
EOF
ok "3/7 three deployments created: schedules and concurrency limit 1 (ENQUEUE) read back"

# -- 4. worker ---------------------------------------------------------------------------------
deadline=$((SECONDS + TIMEOUT_S))
until "$PY" - <<'EOF' 2>/dev/null; do
import asyncio, sys

from prefect.client.orchestration import get_client


async def main() -> bool:
    async with get_client() as client:
        workers = await client.read_workers_for_work_pool("gaibao-process")
        return any(w.name == "verify-worker" for w in workers)


sys.exit(0 if asyncio.run(main()) else 1)
EOF
    kill -0 "$WORKER_PID" 2>/dev/null || fail "4/7 the worker exited (see $WORK/worker.log)"
    ((SECONDS < deadline)) || fail "4/7 the worker did not register within ${TIMEOUT_S}s"
    sleep 0.5
done
ok "4/7 worker verify-worker polling gaibao-process"

# -- 5. demo data, plan, trigger ---------------------------------------------------------------
wait "$DEMO_PID" || { cat "$WORK/demo.log" >&2; fail "5/7 demo returns or gaibao plan load"; }
ok "5b/7 $(grep -v '^\s*$' "$WORK/demo.log" | tail -n 2 | tr '\n' ' ')"
run_backfill() {
    "$PREFECT" --no-prompt deployment run 'backfill/backfill' -p "start=\"$PERIOD\"" -p "end=\"$PERIOD\"" "$@" 2>&1 |
        tee -a "$WORK/run.log" | sed -n 's/.*UUID: *\([0-9a-f-]\{36\}\).*/\1/p' | head -n 1
}
RUN_ID="$(run_backfill)"
[[ -n "$RUN_ID" ]] || { cat "$WORK/run.log" >&2; fail "5/7 prefect deployment run did not create a flow run"; }
RUN_IDS=("$RUN_ID")
if [[ "$OVERLAP" == "1" ]]; then
    RUN_IDS+=("$(run_backfill)")
fi
ok "5c/7 backfill/backfill triggered for $PERIOD: flow run(s) ${RUN_IDS[*]}"

# -- 6. wait -----------------------------------------------------------------------------------
step "6/7 wait for the flow run(s) to complete (timeout ${TIMEOUT_S}s)"
"$PY" - "$TIMEOUT_S" "${RUN_IDS[@]}" <<'EOF' || fail "6/7 the backfill run did not complete"
import asyncio, sys, time
from uuid import UUID

from prefect.client.orchestration import get_client

timeout, ids = float(sys.argv[1]), [UUID(a) for a in sys.argv[2:]]


async def main() -> int:
    deadline = time.monotonic() + timeout
    seen: dict[UUID, str] = {}
    async with get_client() as client:
        while True:
            runs = [await client.read_flow_run(i) for i in ids]
            for run in runs:
                name = run.state.name if run.state else "?"
                if seen.get(run.id) != name:
                    print(f"  flow run {run.name} ({run.id}): {name}", flush=True)
                    seen[run.id] = name
                if run.state and run.state.type.value in ("FAILED", "CRASHED", "CANCELLED"):
                    print(f"  {run.name}: {run.state.message}", file=sys.stderr)
                    return 1
            # never two at once: the deployment's concurrency limit is 1
            running = [r for r in runs if r.state and r.state.type.value == "RUNNING"]
            if len(running) > 1:
                print("  two backfill runs RUNNING at once: the concurrency limit did not hold", file=sys.stderr)
                return 1
            if all(r.state and r.state.type.value == "COMPLETED" for r in runs):
                break
            if time.monotonic() > deadline:
                print(f"  timeout after {timeout:.0f}s", file=sys.stderr)
                return 1
            await asyncio.sleep(0.5)
        if len(runs) > 1:
            spans = sorted((r.start_time, r.end_time, r.name) for r in runs)
            for (s1, e1, n1), (s2, e2, n2) in zip(spans, spans[1:]):
                if s2 < e1:
                    print(f"  {n1} and {n2} overlapped", file=sys.stderr)
                    return 1
            print(f"  {len(runs)} runs, one after the other: " + ", ".join(f"{n} {s:%H:%M:%S}-{e:%H:%M:%S}" for s, e, n in spans))
    return 0


sys.exit(asyncio.run(main()))
EOF
ok "6/7 backfill run(s) Completed"

# -- 7. warehouse ------------------------------------------------------------------------------
step "7/7 check the warehouse ($GAIBAO_WAREHOUSE_URL)"
"$PY" - "$PERIOD" <<'EOF' || fail "7/7 warehouse check"
import sys

import sqlalchemy as sa

from gaibao.settings import get_settings

period = sys.argv[1]
engine = sa.create_engine(get_settings().warehouse_url)
with engine.connect() as conn:

    def count(sql: str) -> int:
        return int(conn.execute(sa.text(sql), {"p": period}).scalar_one())

    accepted = count("SELECT COUNT(*) FROM submission WHERE period = :p AND status = 'accepted'")
    progress = count("SELECT COUNT(*) FROM submission WHERE period = :p AND status = 'accepted' AND kind = 'progress'")
    facts = count("SELECT COUNT(*) FROM fact_progress WHERE period = :p")
    funding = count("SELECT COUNT(*) FROM fact_funding WHERE period = :p")
    mart = count("SELECT COUNT(*) FROM mart_county_progress WHERE period = :p AND has_return")
    city = count("SELECT COUNT(*) FROM mart_city_progress WHERE period = :p")
    issues = count("SELECT COUNT(*) FROM dq_issue WHERE period = :p")
print(f"  {period}: {accepted} accepted submissions ({progress} progress), fact_progress {facts} rows, "
      f"fact_funding {funding} rows, dq_issue {issues} rows, mart_county_progress {mart} counties with a return, "
      f"mart_city_progress {city} rows")
assert progress > 0, "no accepted progress submission"
assert facts > 0, "no fact_progress rows"
assert funding > 0, "no fact_funding rows"
assert mart > 0 and city > 0, "marts are empty"
EOF
ok "7/7 warehouse holds the $PERIOD returns: submissions accepted, fact rows, marts"
