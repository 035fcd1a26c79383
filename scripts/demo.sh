#!/usr/bin/env bash
# The demo: csms_stub on SQLite, the seed fleet's chargers against it, a summary at the end.
source "$(dirname "$0")/_venv.sh"

PORT="${PORT:-9000}"
API_PORT="${API_PORT:-8080}"
WORK="$(mktemp -d)"
python -m csms_stub --host 127.0.0.1 --port "$PORT" --api-host 127.0.0.1 \
    --api-port "$API_PORT" --database-url "sqlite:///$WORK/demo.db" \
    --fleet loadgen/fleets/seed.toml --log-level WARNING &
STUB=$!
trap 'kill -TERM $STUB 2>/dev/null || true; wait $STUB 2>/dev/null || true' EXIT

for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$API_PORT/healthz" >/dev/null 2>&1 && break
    kill -0 $STUB 2>/dev/null || { echo "csms_stub did not start (ports $PORT/$API_PORT free?)" >&2; exit 1; }
    sleep 0.1
done
echo "== csms_stub up: ws://127.0.0.1:$PORT, http://127.0.0.1:$API_PORT, database $WORK/demo.db =="
python -m loadgen.scripted --csms "ws://127.0.0.1:$PORT" --api "http://127.0.0.1:$API_PORT"
kill -TERM $STUB
wait $STUB
trap - EXIT
echo "== csms_stub stopped; its tables are in $WORK/demo.db =="
