#!/usr/bin/env bash
# The demo: csms_stub on SQLite, then a bounded headless Locust run of a few hundred
# charging stations against it (sessions profile, time 60x faster), Locust's summary, the
# reconciliation of what the stations sent with what the CSMS stored, and the CSMS's totals.
# SEARCH=1: a capacity search instead (both capacities), against the stub capped at 150
# connections and 50 BootNotifications a second.
source "$(dirname "$0")/_venv.sh"

PORT="${PORT:-9000}"
API_PORT="${API_PORT:-8080}"
USERS="${USERS:-300}"
RUN_TIME="${RUN_TIME:-45s}"
SEARCH="${SEARCH:-}"
WORK="$(mktemp -d)"
CEILING=()
[ -n "$SEARCH" ] && CEILING=(--max-connections 150 --max-boot-rate 50)
python -m csms_stub --host 127.0.0.1 --port "$PORT" --api-host 127.0.0.1 \
    --api-port "$API_PORT" --database-url "sqlite:///$WORK/demo.db" --log-level WARNING \
    "${CEILING[@]}" &
STUB=$!
trap 'kill -TERM $STUB 2>/dev/null || true; wait $STUB 2>/dev/null || true' EXIT

for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$API_PORT/healthz" >/dev/null 2>&1 && break
    kill -0 $STUB 2>/dev/null || { echo "csms_stub did not start (ports $PORT/$API_PORT free?)" >&2; exit 1; }
    sleep 0.1
done
echo "== csms_stub up: ws://127.0.0.1:$PORT, http://127.0.0.1:$API_PORT, database $WORK/demo.db"
if [ -n "$SEARCH" ]; then
    echo "== capacity search: the connect rate (5, 10, 20 ... chargers/s; the stub boots 50/s),"
    echo "   then 50, 100, 150, ... chargers, 10 s holds (the stub takes 150) =="
    LOAD=(--capacity-search both --capacity-start 50 --capacity-step +50 --capacity-max 300
          --capacity-hold 10 --capacity-resolution 10 --capacity-linger 0 --reconnect-cap 5
          --fleet-size 300 --run-time 10m)
else
    echo "== $USERS charging stations for $RUN_TIME (simulated time 60x: an hour a minute) =="
    LOAD=(--users "$USERS" --run-time "$RUN_TIME" --fleet-size "$USERS")
fi
status=0
locust -f locustfile.py --headless --host "ws://127.0.0.1:$PORT" \
    --spawn-rate 100 --stop-timeout 30 "${LOAD[@]}" \
    --ocpp-profile sessions --time-scale 60 --meter-interval 60 \
    --session-interarrival 900 --session-stay 1200 --report-dir "$WORK/reports" \
    --csms-api "http://127.0.0.1:$API_PORT" --only-summary --loglevel WARNING || status=$?
echo
echo "== the CSMS's totals (GET /stats) =="
curl -s "http://127.0.0.1:$API_PORT/stats" | python -m json.tool
kill -TERM $STUB
wait $STUB
trap - EXIT
echo "== csms_stub stopped; its tables are in $WORK/demo.db =="
exit $status
