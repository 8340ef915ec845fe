"""Benchmarks of fedtrack-redis against the DESIGN §5 targets (not tests)."""
