# Sourced by the other scripts: make .venv with the project and its dev extra installed.
# Re-installs only when pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python 3.11 or newer is needed as '$PYTHON' (set PYTHON=...)" >&2
    exit 1
fi
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    "$PYTHON" -m venv "$ROOT/.venv"
fi
STAMP="$ROOT/.venv/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
    echo "== installing the project into .venv (once) ==" >&2
    "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip >&2
    "$ROOT/.venv/bin/python" -m pip install -q -e "$ROOT[dev]" >&2
    rm -f "$ROOT"/.venv/.installed-*
    touch "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
cd "$ROOT"
