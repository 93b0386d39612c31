#!/usr/bin/env bash
# The main job: sets everything up, starts a local control plane (etcd, kube-apiserver,
# kube-controller-manager, Tekton's controller), applies the sample PipelineRun and shows
# its PipelineRun and CustomRuns as they change. As root it also starts a real node and
# adds a sample whose Tekton tasks run in Pods beside the Wait custom tasks.
# Extra arguments go to `customtask-sdk dev up` (e.g. --keep-running to keep the control
# plane up and use it with KUBECONFIG).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
samples=(-f examples/wait/pipelinerun.yaml)
if [ "$(id -u)" = 0 ]; then
  samples+=(-f examples/wait/pipelinerun-node.yaml)
else
  echo "up: not root, so no node: only the Wait custom tasks run (Tekton tasks need Pods)"
fi
exec .venv/bin/customtask-sdk dev up -c examples.wait.controller:Wait "${samples[@]}" "$@"
