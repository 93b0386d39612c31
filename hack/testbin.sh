#!/usr/bin/env bash
# Builds the control-plane binaries at the versions pinned in
# customtask_sdk/testing/testbin.py (idempotent; see `customtask-sdk testbin install`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
