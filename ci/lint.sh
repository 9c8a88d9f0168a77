#!/usr/bin/env bash
# ruff and mypy over the package and the tests, as configured in pyproject.toml (~30 s).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check zdtmpy tests
.venv/bin/mypy
echo "lint: ruff and mypy clean"
