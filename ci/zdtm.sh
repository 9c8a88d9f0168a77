#!/usr/bin/env bash
# The main job: set up, then run the default test matrix (zdtmpy/descs/) against the criu found or
# built. Extra arguments go to pytest (e.g. --zdtm-mode plain -k pages00).
set -euo pipefail
cd "$(dirname "$0")/.."
criu=$(ci/setup.sh | tail -n1)
export ZDTM_CRIU="$criu" ZDTM_REQUIRE_CRIU=1
exec .venv/bin/pytest zdtmpy/descs -n auto "$@"
