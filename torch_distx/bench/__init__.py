"""Benchmarks: ``python -m torch_distx.bench {allreduce,compression} ...``."""
