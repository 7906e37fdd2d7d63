#!/usr/bin/env bash
# Set everything up and run the checks: ruff, mypy and pytest (on SQLite and on a real PostgreSQL).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --distributed

if url=$(bash scripts/postgres.sh start); then
  export CORRAL_TEST_POSTGRES_URL="$url"
  trap 'bash scripts/postgres.sh stop' EXIT
  echo "PostgreSQL for tests at ${url}"
elif [ "${CI:-}" = "true" ]; then
  echo "PostgreSQL could not be started; CI must test it" >&2
  exit 1
else
  echo "PostgreSQL could not be started: its tests are skipped" >&2
fi

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest "$@"
