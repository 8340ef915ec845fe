"""Benchmarks of fedtrack-redis against the README's performance targets (not tests)."""
