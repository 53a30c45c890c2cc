"""Differential conformance against the official dashscope SDK (issue 5)."""
