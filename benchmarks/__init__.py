"""Tools that measure the library: train step, input pipeline, op profile (see README.md here).

Run from the repository root, e.g. `python -m benchmarks.train_step --quick`.
"""
