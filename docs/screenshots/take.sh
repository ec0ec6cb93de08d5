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
# It writes, next to this script (or into $SHOT_OUT):
#   mlflow-runs.png            the `recloop` experiment's runs table: run names, registered model
#                              versions, metric and tag columns ($SHOT_RUN_COLUMNS picks them)
#   mlflow-learning-curve.png  the "Model metrics" tab of the newest run that logged a metric over
#                              several steps (per-epoch curves), filtered to those metrics; the
#                              newest run's charts when no run has one
#   prefect-runs.png           Prefect's flow-runs list (flow and run names, states, tags)
# and prints the URL of each. Takes about a minute (each server ~10 s to start, each shot
# ~10 s); a shot waits at most 90 s for its page.
#
# How: it serves *copies* of the two SQLite databases (taken with SQLite's backup API, so a run in
# progress is fine) from a temporary folder, so neither the servers' migrations nor the UIs' own
# writes (MLflow's UI may tag an experiment with its inferred kind) touch your state. It starts
# `mlflow server` on 127.0.0.1:5055 and `prefect server start --no-services` on 127.0.0.1:4242
# (override with SHOT_MLFLOW_PORT / SHOT_PREFECT_PORT; it refuses ports already in use), reads
# the experiment and its runs through MLflow's REST API (mlflow_lookup.py), and drives headless
# Chromium over the DevTools protocol (shoot.py), so that each shot waits until the page has
# really rendered and UI preferences can be set (MLflow's model-training view, the runs table's
# columns, the assistant panel closed). Everything stays on 127.0.0.1: Chromium resolves no other
# host name, and MLflow/Prefect telemetry is off. The servers are stopped (by their PIDs, from a
# trap) on exit, on failure and on Ctrl-C, and the temporary folder is removed.
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
FLOW_NAME=${SHOT_FLOW:-feedback-loop}
# Runs-table columns (metrics.KEY, tags.KEY, params.KEY; about four fit in 1600 px): those no run
# has are left out.
RUN_COLUMNS=${SHOT_RUN_COLUMNS:-metrics.ndcg_at_10 metrics.recall_at_10 metrics.champion_ndcg_at_10 tags.gate}
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

# What to show, from MLflow's REST API (see mlflow_lookup.py): the experiment, the run for the
# learning curve and its multi-step metrics, the run table's columns.
IFS=$'\x1f' read -r EXP_ID RUN_ID RUN_NAME NEWEST_NAME _ CURVES VIEW_STATE < <(
  "$PY" "$HERE/mlflow_lookup.py" "$MLFLOW_URL" "$EXPERIMENT" "$RUN_COLUMNS"
) || die "could not read experiment '$EXPERIMENT' from $MLFLOW_URL"
log "experiment $EXPERIMENT = $EXP_ID; learning curve from run $RUN_ID '$RUN_NAME'" \
  "(multi-step metrics: ${CURVES:-none})"

# MLflow 3's UI opens on its GenAI pages with an assistant panel and hint pop-ups the first time;
# these local-storage entries say "model training view, assistant closed, hints seen", and give
# the runs table its columns (MLflow shows no metric column until one is picked in "Columns").
# Should the assistant panel be open all the same, its close button is clicked.
MLFLOW_BROWSER=(
  --local-storage 'mlflow.workflowType_v1="machine_learning"'
  --local-storage 'mlflow.assistant.panelOpen_v1=false'
  --local-storage 'mlflow.assistant.fab.autoOpenedOnFirstLoad_v1=true'
  --local-storage 'mlflow.detectIssues.guidanceShown_v1=true'
  --local-storage 'mlflow.flagForReview.guidanceShown_v1=true'
  --local-storage "MLflowLocalStorage-1.1-ExperimentPage-[\"$EXP_ID\"]-ReactComponentState=$VIEW_STATE"
  --click-css '[data-component-id="mlflow.assistant.chat_panel.close"]'
)

STATUS=0
shot() {  # shot OUT.png URL [shoot.py options...]
  local rc=0
  "$PY" "$HERE/shoot.py" "$@" || rc=$?
  if ((rc == 1)); then STATUS=1; elif ((rc != 0 && STATUS == 0)); then STATUS=$rc; fi
}

URL_RUNS="$MLFLOW_URL/#/experiments/$EXP_ID/runs?workflowType=machine_learning"
shot "$OUT/mlflow-runs.png" "$URL_RUNS" "${MLFLOW_BROWSER[@]}" \
  --wait-text "$NEWEST_NAME" --wait-text "matching run"

# The run's "Model metrics" tab charts every metric; when some have several steps, the charts'
# search box (a regular expression) keeps just those curves. The charts' titles are drawn in SVG,
# which the page's text does not hold: the section header "Model metrics (N)" says they are there.
URL_CURVE="$MLFLOW_URL/#/experiments/$EXP_ID/runs/$RUN_ID/model-metrics?workflowType=machine_learning"
CURVE_FILTER=()
[[ -n $CURVES ]] && CURVE_FILTER=(--type 'input[placeholder="Search metric charts"]' "$CURVES")
shot "$OUT/mlflow-learning-curve.png" "$URL_CURVE" "${MLFLOW_BROWSER[@]}" "${CURVE_FILTER[@]}" \
  --wait-text "$RUN_NAME" --wait-text "Model metrics ("

URL_PREFECT="$PREFECT_URL/runs"
# Scrolled past the filters and the duration chart to the list itself.
shot "$OUT/prefect-runs.png" "$URL_PREFECT" --wait-text "Runs" --wait-text "$FLOW_NAME" \
  --scroll-css '.list-header'


log "done (status $STATUS):"
printf '  %s\n    <- %s\n' "$OUT/mlflow-runs.png" "$URL_RUNS" \
  "$OUT/mlflow-learning-curve.png" "$URL_CURVE" "$OUT/prefect-runs.png" "$URL_PREFECT" >&2
exit "$STATUS"
