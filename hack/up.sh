#!/usr/bin/env bash
# The main job: sets everything up, starts a local control plane (etcd, kube-apiserver,
# kube-controller-manager, Tekton's controller), applies the sample PipelineRun and shows
# its PipelineRun and CustomRuns as they change. Extra arguments go to `customtask-sdk dev up`
# (e.g. --keep-running to keep the control plane up and use it with KUBECONFIG).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
exec .venv/bin/customtask-sdk dev up -c examples.wait.controller:Wait -f examples/wait/pipelinerun.yaml "$@"
