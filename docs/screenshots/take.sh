#!/usr/bin/env bash
# docs/screenshots/take.sh: screenshots of the MLflow UI and the Prefect UI as a user sees them
# after `recloop run`, taken with headless Chromium.
#
# Usage (from anywhere; paths relative to the current directory):
#
#     bash docs/screenshots/take.sh [RECLOOP_HOME] [PREFECT_HOME]
#
#   RECLOOP_HOME  the state folder `recloop run` wrote (default: $RECLOOP_HOME, else .recloop);
#                 its mlflow.db (runs, registry) and mlartifacts/ (charts' artifacts) are shown.
#   PREFECT_HOME  the Prefect home whose prefect.db holds the flow runs (default: $PREFECT_HOME,
#                 else ~/.prefect).
#
# It writes, next to this script:
#   mlflow-runs.png            the `recloop` experiment's runs table (run names, metric columns)
#   mlflow-learning-curve.png  the newest run with a per-epoch metric: its "Model metrics" charts
#   prefect-runs.png           Prefect's flow-runs list (names, tags, states)
# and prints the URL of each. About 1-2 minutes (most of it the two servers starting).
#
# How: it serves *copies* of the two SQLite databases (taken with SQLite's backup API, so a run in
# progress is fine) from a temporary folder, so neither the servers' migrations nor the UIs' own
# writes (MLflow's UI tags an experiment with its inferred kind) touch your state. It starts
# `mlflow server` on 127.0.0.1:5055 and `prefect server start --no-services` on 127.0.0.1:4242
# (override with SHOT_MLFLOW_PORT / SHOT_PREFECT_PORT), looks up the experiment and the runs
# through MLflow's REST API, and drives headless Chromium over the DevTools protocol (shoot.py)
# so each shot waits until the page has really rendered. Everything stays on 127.0.0.1: Chromium
# resolves no other host name. The servers are stopped (by their PIDs, from a trap) on exit,
# failure or Ctrl-C, and the temporary folder is removed.
#
# Prerequisites:
#   apt-get install -y chromium        (Debian's; or set CHROMIUM=/path/to/chrome)
#   the project's venv at .venv (mlflow, prefect, websockets): python3 -m venv .venv &&
#   .venv/bin/pip install -e .         (or set VENV=/path/to/venv)
#   curl
#
# Exit status: 0 when every shot showed the text it waited for; 1 when a shot could not be
# taken or a server did not start; 3 when a shot was taken but its page never showed the
# expected text (look at the PNG).

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV=${VENV:-$REPO/.venv}
PY=$VENV/bin/python
HOME_DIR=${1:-${RECLOOP_HOME:-.recloop}}
PREFECT_DIR=${2:-${PREFECT_HOME:-$HOME/.prefect}}
MLFLOW_PORT=${SHOT_MLFLOW_PORT:-5055}
PREFECT_PORT=${SHOT_PREFECT_PORT:-4242}
EXPERIMENT=${SHOT_EXPERIMENT:-recloop}
OUT=${SHOT_OUT:-$HERE}
MLFLOW_URL=http://127.0.0.1:$MLFLOW_PORT
PREFECT_URL=http://127.0.0.1:$PREFECT_PORT

log() { printf '[take.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x $PY ]] || die "no Python venv at $VENV (python3 -m venv .venv && .venv/bin/pip install -e .)"
[[ -f $HOME_DIR/mlflow.db ]] || die "no $HOME_DIR/mlflow.db: run \`recloop run\` first, or pass its RECLOOP_HOME"
[[ -f $PREFECT_DIR/prefect.db ]] || die "no $PREFECT_DIR/prefect.db: pass the PREFECT_HOME \`recloop run\` used"
command -v curl >/dev/null || die "curl is needed"
command -v "${CHROMIUM:-chromium}" >/dev/null || die "no chromium: apt-get install -y chromium"
HOME_ABS=$(cd "$HOME_DIR" && pwd)
PREFECT_ABS=$(cd "$PREFECT_DIR" && pwd)
mkdir -p "$OUT"

for port in "$MLFLOW_PORT" "$PREFECT_PORT"; do  # never screenshot someone else's server
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; then
    die "port $port is already in use on 127.0.0.1 (set SHOT_MLFLOW_PORT / SHOT_PREFECT_PORT)"
  fi
done

TMP=$(mktemp -d -t recloop-shots.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do  # each server was started as the leader of its own process group
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: run CMD in TMP as the leader of its own session and process group, so that
# cleanup stops it together with its workers. (A background job of a script is no group leader,
# so setsid runs CMD in this very process: $! is CMD's PID.)
start() {
  local name=$1
  shift
  (cd "$TMP" && exec setsid "$@") >"$TMP/$name.log" 2>&1 &
  PIDS+=("$!")
  log "$name started (pid $!), log $TMP/$name.log"
}

# wait_for NAME URL SECONDS
wait_for() {
  local name=$1 url=$2 secs=$3 i
  for ((i = 0; i < secs * 2; i++)); do
    curl -sf -o /dev/null --max-time 5 "$url" && { log "$name is up"; return 0; }
    sleep 0.5
  done
  tail -20 "$TMP/$name.log" >&2 || true
  die "$name did not answer $url within ${secs}s"
}

snapshot() {  # snapshot SRC DST: a consistent copy of a live SQLite database
  "$PY" -c 'import sqlite3, sys
src = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close()' "$1" "$2"
}

log "copying $HOME_ABS/mlflow.db and $PREFECT_ABS/prefect.db to $TMP"
snapshot "$HOME_ABS/mlflow.db" "$TMP/mlflow.db"
mkdir -p "$TMP/prefect-home"
snapshot "$PREFECT_ABS/prefect.db" "$TMP/prefect-home/prefect.db"

# MLflow: the runs' artifact locations are absolute (file://$HOME_ABS/mlartifacts/...), so the
# copied database still finds them.
start mlflow env MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true \
  "$VENV/bin/mlflow" server --backend-store-uri "sqlite:///$TMP/mlflow.db" \
  --default-artifact-root "file://$HOME_ABS/mlartifacts" \
  --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1

# Prefect: a server on the copy, without its background services (scheduler, late runs, ...),
# which would otherwise change the runs' states.
start prefect env -u PREFECT_API_URL -u PREFECT_API_KEY -u PREFECT_PROFILE \
  PREFECT_HOME="$TMP/prefect-home" \
  PREFECT_API_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///$TMP/prefect-home/prefect.db" \
  PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_API_URL="$PREFECT_URL/api" DO_NOT_TRACK=true \
  "$VENV/bin/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" --no-services --analytics-off

wait_for mlflow "$MLFLOW_URL/health" 120
wait_for prefect "$PREFECT_URL/api/health" 180

# What to show, from MLflow's REST API: the experiment; the newest runs; among them the newest
# one that logged a metric over several steps (a per-epoch curve), else the newest.
IFS=$'\t' read -r EXP_ID RUN_ID RUN_NAME WAIT_RUNS WAIT_METRIC < <(
  "$PY" - "$MLFLOW_URL" "$EXPERIMENT" <<'EOF'
import json, sys, urllib.parse, urllib.request

base, name = sys.argv[1], sys.argv[2]
def api(path, body=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)
exp = api("/api/2.0/mlflow/experiments/get-by-name?"
          + urllib.parse.urlencode({"experiment_name": name}))["experiment"]["experiment_id"]
runs = api("/api/2.0/mlflow/runs/search", {"experiment_ids": [exp], "max_results": 100,
           "order_by": ["attributes.start_time DESC"]}).get("runs", [])
if not runs:
    sys.exit(f"experiment {name!r} has no runs")
def curves(run):
    return [m["key"] for m in run["data"].get("metrics", []) if int(m.get("step", 0)) > 0]
chosen = next((r for r in runs if curves(r)), runs[0])
metric = (curves(chosen) or [m["key"] for m in chosen["data"].get("metrics", [])] or ["-"])[0]
# Text the runs table must show before its shot: the newest run's name.
print(exp, chosen["info"]["run_id"], chosen["info"].get("run_name", ""),
      runs[0]["info"].get("run_name", ""), metric, sep="\t")
EOF
) || die "could not read experiment '$EXPERIMENT' from $MLFLOW_URL"
log "experiment $EXPERIMENT = $EXP_ID; learning curve from run $RUN_ID '$RUN_NAME' (metric $WAIT_METRIC)"

# MLflow 3's UI opens on its GenAI pages with an assistant panel and hint pop-ups the first time;
# these local-storage entries say "model training view, panel closed, hints seen".
MLFLOW_STORAGE=(
  --local-storage 'mlflow.workflowType_v1="machine_learning"'
  --local-storage 'mlflow.assistant.panelOpen_v1=false'
  --local-storage 'mlflow.assistant.fab.autoOpenedOnFirstLoad_v1=true'
  --local-storage 'mlflow.detectIssues.guidanceShown_v1=true'
  --local-storage 'mlflow.flagForReview.guidanceShown_v1=true'
)

STATUS=0
shot() {  # shot OUT.png URL [shoot.py options...]
  local rc=0
  "$PY" "$HERE/shoot.py" "$@" || rc=$?
  if ((rc == 1)); then STATUS=1; elif ((rc != 0 && STATUS == 0)); then STATUS=$rc; fi
}

URL_RUNS="$MLFLOW_URL/#/experiments/$EXP_ID/runs?workflowType=machine_learning&compareRunsMode=TABLE"
shot "$OUT/mlflow-runs.png" "$URL_RUNS" "${MLFLOW_STORAGE[@]}" \
  --wait-text "$WAIT_RUNS" --wait-text "matching runs"

URL_CURVE="$MLFLOW_URL/#/experiments/$EXP_ID/runs/$RUN_ID/model-metrics?workflowType=machine_learning"
shot "$OUT/mlflow-learning-curve.png" "$URL_CURVE" "${MLFLOW_STORAGE[@]}" \
  --wait-text "$RUN_NAME" --wait-text "$WAIT_METRIC"

URL_PREFECT="$PREFECT_URL/runs"
shot "$OUT/prefect-runs.png" "$URL_PREFECT" --wait-text "Flow Runs" --wait-text "feedback-loop"

log "done (status $STATUS):"
printf '  %s\n    <- %s\n' "$OUT/mlflow-runs.png" "$URL_RUNS" \
  "$OUT/mlflow-learning-curve.png" "$URL_CURVE" "$OUT/prefect-runs.png" "$URL_PREFECT" >&2
exit "$STATUS"
