"""Benchmarks: each module measures a goal as a ratio against a yardstick in the same run.

Run one with ``python -m benchmarks.<module>``; numbers go to ``docs/benchmarks.md``.
"""
