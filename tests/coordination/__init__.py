"""Coordination: one contract suite over the in-process backend and a real redis-server."""
