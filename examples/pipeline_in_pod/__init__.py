"""Pipeline-in-Pod: a whole Tekton Pipeline in one Pod, ordered by Tekton's entrypoint."""
