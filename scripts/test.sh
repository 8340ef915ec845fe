#!/usr/bin/env bash
# The one test command (README, CI): set up everything on a fresh machine, then lint,
# type-check and run the test suite against real Redis and PostgreSQL.
#
#   bash scripts/test.sh              # the suite without the slow scenarios (under 10 minutes)
#   bash scripts/test.sh --all        # everything: also the fault, engine-matrix (Sentinel,
#                                     # Cluster) and soak scenarios, as CI runs it
#   bash scripts/test.sh [pytest args...]
#
# Redis and PostgreSQL: the tests use FEDTRACK_TEST_REDIS_URL / FEDTRACK_TEST_DATABASE_URL
# when set, else the local services on 127.0.0.1 when they answer, else throwaway
# instances they start themselves (Sentinel and Cluster are always throwaway ones). This
# script only makes sure the server binaries exist (installing them with apt-get when
# missing and running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh

selection=(-m "not slow and not engines")
if [ "${1:-}" = "--all" ]; then
  shift
  selection=()
fi
if [ $# -gt 0 ]; then
  selection=()
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest --durations=20 "${selection[@]}" "$@"
