#!/usr/bin/env bash
# The demo: a small simulated cluster (4 workers, a flusher, the dashboard) on throwaway
# local services. Sets up .venv on first use. Extra arguments go to `fedtrack demo`
# (for example --port 8080 or --duration 60). Ctrl-C stops everything cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
export FEDTRACK_SETUP_BROWSER=0
source scripts/setup-env.sh
exec .venv/bin/fedtrack demo "$@"
