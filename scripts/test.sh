#!/usr/bin/env bash
# The test command: lint, then every test against the machine's real PostgreSQL and Redis.
source "$(dirname "$0")/_venv.sh"

# The tests need the machine's PostgreSQL (127.0.0.1:5432, trust, database test) and Redis
# (127.0.0.1:6379); start them with the machine's own commands when they are down.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "== PostgreSQL is down: starting it ==" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "== Redis is down: starting it ==" >&2
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi

# The compose and Prometheus checks use Debian's docker-compose (for `config`, no engine)
# and promtool; the reports and Locust's web UI are checked in Debian's headless chromium.
# Install them once when missing and we can.
if { ! command -v docker-compose >/dev/null || ! command -v promtool >/dev/null \
        || ! command -v chromium >/dev/null; } \
        && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "== installing docker-compose, prometheus (promtool) and chromium from Debian ==" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends docker-compose prometheus chromium >/dev/null) \
        || echo "warning: could not install docker-compose/promtool/chromium" >&2
fi

ruff check .
ruff format --check .
# Two workers, a test file each at a time: most of the time goes to end-to-end runs that wait
# on sockets and timers, and a file's tests (module fixtures, one stub) stay together. The
# files start in tests/conftest.py's order (the load-sensitive master search beside the unit
# tests, then the long end-to-end files, longest first), not in xdist's by number of tests,
# which started the longest file (one test) last.
exec python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
