"""Approval: a Tekton pipeline gate that the apiserver guards (see README.md)."""
