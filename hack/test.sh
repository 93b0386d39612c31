#!/usr/bin/env bash
# Sets everything up (hack/setup.sh), runs the linters and type checks, then the tests:
# unit tests and the integration tests against the real local control plane.
# Extra arguments go to pytest, e.g. `bash hack/test.sh tests/unit -k queue`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
echo "test: ruff and mypy --strict"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
echo "test: pytest"
exec .venv/bin/pytest "$@"
