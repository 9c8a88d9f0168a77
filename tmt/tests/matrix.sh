#!/bin/bash
# tmt test: the matrix from the plan's tree, installed into a fresh venv.
set -euo pipefail
export ZDTMPY_OUT=${TMT_TEST_DATA:-$PWD/zdtmpy-out}
exec "${TMT_TREE:?not run by tmt}/ci/run-installed-matrix.sh" "$TMT_TREE"
