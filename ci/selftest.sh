#!/usr/bin/env bash
# The project's own tests (unit tests and the real-criu scenario tests under tests/).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
criu=$(ci/setup.sh | tail -n1)
export ZDTM_CRIU="$criu" ZDTM_REQUIRE_CRIU=1
exec .venv/bin/pytest tests -n auto "$@"
