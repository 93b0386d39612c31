#!/usr/bin/env bash
# Installs everything this project needs, from nothing, and is quick when it is all there:
#   - a virtualenv in .venv with the SDK (editable) and its pinned dev dependencies;
#   - the control-plane binaries (etcd, kube-apiserver, kube-controller-manager, Tekton's
#     controller and entrypoint), built from pinned Go modules into ~/.cache/customtask-sdk;
#   - as root on Debian, the node too (docs/testing.md, "A real node"): kubelet,
#     kube-scheduler, kube-proxy, kubectl and Tekton's image binaries built the same way,
#     and Debian's containerd, runc, CNI plugins, iptables, busybox-static and bash-static
#     through apt-get. Without root the node tests skip (fail in CI).
# Needs: python3 >= 3.11 and go (the version the pinned Kubernetes release names, or newer).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: Python >= 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if ! command -v go >/dev/null 2>&1; then
  echo "setup: Go is required to build the control-plane binaries (https://go.dev/doc/install)" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
stamp=.venv/.customtask-sdk-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ hack/constraints.txt -nt "$stamp" ]; then
  echo "setup: installing Python dependencies (pinned by hack/constraints.txt)"
  log=.venv/pip-install.log
  if ! { .venv/bin/python -m pip install --upgrade pip &&
         .venv/bin/python -m pip install -c hack/constraints.txt -e ".[dev]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: pip install failed (log above, also in $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi

echo "setup: control-plane (and, as root, node) binaries (built once, cached in ${CUSTOMTASK_SDK_CACHE:-~/.cache/customtask-sdk})"
.venv/bin/customtask-sdk testbin install
