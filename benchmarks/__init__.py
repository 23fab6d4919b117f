"""temseg's benchmark suites (pytest-benchmark) and the baseline they are measured against.

Run them with ``make bench``; see docs/benchmarks.md.
"""
