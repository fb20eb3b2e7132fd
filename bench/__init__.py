"""Benchmarks: each measures a part of the system against a reference in the same run."""
