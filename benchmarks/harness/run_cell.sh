#!/usr/bin/env bash
# Run one named cell of the harness for the given systems, e.g.
#   ./run_cell.sh chaos_postgres_restart aio_async_base,aio_async
# Cells and their command lines: cells.md. Prints the results dir at the end.
set -uo pipefail
H="${HARNESS_DIR:-$PWD}"
cd "$H"
NAME="${1:?usage: run_cell.sh NAME SYSTEMS}"
SYSTEMS="${2:?usage: run_cell.sh NAME SYSTEMS}"
NSYS=$(awk -F, '{print NF}' <<<"$SYSTEMS")

export BENCH_PG_PORT=55700
export BENCH_PG_DATA=$H/pg/data
export BENCH_PG_CTL=/usr/lib/postgresql/15/bin/pg_ctl
export BENCH_PG_RUNAS=postgres
export BENCH_PYTHON_AIO_ASYNC=$H/.venv-aio/bin/python           # aio_async: editable from ${AIO_ASYNC_SRC:?set AIO_ASYNC_SRC to the aio_async checkout under test}
export BENCH_PYTHON_AIO_ASYNC_BASE=${BASE_PY:-$H/.venv-aio-base/bin/python} # BASE_PY: another python for aio_async_base (the same checkout, other settings)
export BENCH_AIO_ASYNC_SRC=${AIO_ASYNC_SRC:?set AIO_ASYNC_SRC to the aio_async checkout under test}
export BENCH_AIO_ASYNC_BASE_SRC=${AIO_ASYNC_BASE_SRC:?set AIO_ASYNC_BASE_SRC to the checkout to compare with}
[ -x "$H/.venv-procr/bin/python" ] && export BENCH_PYTHON_PROCRASTINATE=$H/.venv-procr/bin/python
export PRODUCER_BATCH_MAX=128
export PRODUCER_PACING=adapter

B=("$H/.venv-harness/bin/python" bench.py run --systems "$SYSTEMS")
TP=(--producer-rate 50000 --producer-mode depth-target --target-depth 4000)
case "$NAME" in
  # Phase B (scripts/run_full_sweep.sh phase_b): named scenarios, fixed producer, default W=32
  chaos_postgres_restart|chaos_pg_backend_kill|chaos_pool_exhaustion)
    ARGS=(--scenario "$NAME" --producer-rate 600 --replicas 1 --skip-build) ;;
  chaos_crash_recovery|chaos_repeated_kills)
    ARGS=(--scenario "$NAME" --producer-rate 300 --replicas 2 --skip-build) ;;
  # Phase C (scripts/run_full_sweep.sh phase_c): fixed producer
  idle_in_tx)
    ARGS=(--phase warmup=warmup:30s --phase clean_1=clean:60s --phase idle_1=idle-in-tx:240s --phase recovery_1=clean:180s
          --worker-count 32 --producer-mode fixed --producer-rate 800 --skip-build) ;;
  sustained_high_load)
    ARGS=(--phase warmup=warmup:30s --phase clean_1=clean:60s --phase pressure_1=high-load:240s --phase recovery_1=clean:120s
          --worker-count 32 --producer-mode fixed --producer-rate 800 --skip-build) ;;
  active_readers)
    ARGS=(--phase warmup=warmup:30s --phase clean_1=clean:60s --phase readers_1=active-readers:240s --phase recovery_1=clean:120s
          --worker-count 32 --producer-mode fixed --producer-rate 800 --skip-build) ;;
  event_burst)
    ARGS=(--phase warmup=warmup:30s --phase clean_1=clean:60s --phase pressure_1=high-load:300s --phase recovery_1=clean:240s
          --worker-count 64 --producer-mode fixed --producer-rate 1200 --skip-build) ;;
  # Throughput (README.md loop: 20 s warm-up + 60 s measured; the sweep's Phase A is 30 s + 180 s)
  throughput_4|throughput_16|throughput_64)
    ARGS=("${TP[@]}" --worker-count "${NAME#throughput_}" --phase warmup=warmup:20s --phase clean=clean:60s --skip-build) ;;
  smoke)  # validation only: throughput_4 shortened to 10 s + 20 s
    ARGS=("${TP[@]}" --worker-count 4 --phase warmup=warmup:10s --phase clean=clean:20s --skip-build) ;;
  *) echo "unknown cell: $NAME (see cells.md)" >&2; exit 2 ;;
esac

# The sweep wraps each single-system cell in `timeout --signal=KILL 15m`;
# here: 15 min per system in the run (CELL_TIMEOUT_S overrides), then the
# whole process group (harness, adapters, workers) is stopped.
TIMEOUT_S=${CELL_TIMEOUT_S:-$((900 * NSYS))}

LOG=$(mktemp /tmp/run_cell.XXXXXX.log)
START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "[run_cell] $NAME systems=$SYSTEMS start=$START timeout=${TIMEOUT_S}s" | tee -a "$LOG"
echo "[run_cell] ${B[*]} ${ARGS[*]}" | tee -a "$LOG"
setsid "${B[@]}" "${ARGS[@]}" >>"$LOG" 2>&1 &
PID=$!
# watcher: load average every 5 s (the machine is shared) + the timeout
( for ((i = 0; i < TIMEOUT_S; i += 5)); do kill -0 "$PID" 2>/dev/null || exit 0
    echo "$(date -u +%H:%M:%S) $(cat /proc/loadavg)" >>"$LOG.loadavg"; sleep 5; done
  echo "[run_cell] TIMEOUT after ${TIMEOUT_S}s: stopping process group $PID" >>"$LOG"
  kill -TERM -- "-$PID" 2>/dev/null; sleep 30; kill -KILL -- "-$PID" 2>/dev/null ) &
WATCH=$!
wait "$PID"; RC=$?
wait "$WATCH" 2>/dev/null
END=$(date -u +%Y-%m-%dT%H:%M:%SZ)

RUN_ID=$(grep -oE 'run_id = [^[:space:]]+' "$LOG" | head -1 | cut -d' ' -f3)
RUN_DIR=""
[ -n "$RUN_ID" ] && RUN_DIR="$H/results/$RUN_ID"
if [ -n "$RUN_DIR" ] && [ -d "$RUN_DIR" ]; then
  P="$RUN_DIR/provenance"; mkdir -p "$P"
  { echo "cell=$NAME systems=$SYSTEMS rc=$RC start=$START end=$END"
    echo "harness: $(git -C "$H" rev-parse HEAD) + worktree diff in harness.diff"
    for t in ${AIO_ASYNC_SRC:?set AIO_ASYNC_SRC to the aio_async checkout under test} ${AIO_ASYNC_BASE_SRC:?set AIO_ASYNC_BASE_SRC to the checkout to compare with}; do
      echo "$t: $(git -C "$t" rev-parse HEAD) dirty-files: $(git -C "$t" status --porcelain --untracked-files=no | wc -l)"
    done
    env | grep -E '^(BENCH_|PRODUCER_|JOB_|AIO_)' | sort
  } > "$P/cell.txt"
  git -C "$H" diff HEAD > "$P/harness.diff"
  git -C ${AIO_ASYNC_SRC:?set AIO_ASYNC_SRC to the aio_async checkout under test} diff HEAD > "$P/main.diff"             # uncommitted changes under test
  git -C ${AIO_ASYNC_SRC:?set AIO_ASYNC_SRC to the aio_async checkout under test} status --porcelain > "$P/main.status"
  "$BENCH_PYTHON_AIO_ASYNC" -m pip freeze > "$P/venv-aio.txt" 2>/dev/null
  "$BENCH_PYTHON_AIO_ASYNC_BASE" -m pip freeze > "$P/venv-aio-base.txt" 2>/dev/null
  # server log lines of this run (restart times, autovacuum, slow statements)
  # (log_line_prefix '%m [%p] ', UTC; continuation lines follow their entry)
  awk -v s="${START/T/ }" -v e="${END/T/ }" '
    /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] / { ts = $1 " " $2; keep = (ts >= substr(s, 1, 19) && ts <= substr(e, 1, 19) "~") }
    keep' "$H/pg/server.log" > "$RUN_DIR/server.log" 2>/dev/null
  if [ "$NAME" = chaos_postgres_restart ]; then
    # harness stops the cluster at the end; restart it briefly to read the job tables
    "$H/pg.sh" start >/dev/null 2>&1
    "$H/.venv-harness/bin/python" "$H/restart_timing.py" "$RUN_DIR" >>"$LOG" 2>&1
    "$H/pg.sh" stop >/dev/null 2>&1
  fi
  cp "$LOG" "$RUN_DIR/harness.log"
  cp "$LOG.loadavg" "$P/loadavg.txt" 2>/dev/null
fi
echo "[run_cell] rc=$RC"
echo "${RUN_DIR:-no results dir (see $LOG)}"
exit $RC
