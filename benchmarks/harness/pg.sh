#!/bin/sh
# Start/stop/status of the harness's private PostgreSQL 15 cluster
# (port 55700, data ${HARNESS_DIR:-$PWD}/pg/data, owned by OS user postgres, log pg/server.log).
# Usage: ./pg.sh start|stop|status|psql [args...]
set -e
PGBIN=/usr/lib/postgresql/15/bin
PGDATA=${HARNESS_DIR:-$PWD}/pg/data
LOG=${HARNESS_DIR:-$PWD}/pg/server.log   # same path the patched orchestrator uses ($BENCH_PG_DATA/../server.log)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$1" in
  start)  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -t 60 -l "$LOG" start ;;
  stop)   as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -t 60 -m fast stop ;;
  status) as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status ;;
  psql)   shift; exec "$PGBIN/psql" -h localhost -p 55700 -U bench "$@" ;;
  *) echo "usage: $0 start|stop|status|psql [args]" >&2; exit 2 ;;
esac
