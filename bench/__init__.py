"""Benchmarks of the CRM platform against the servers under it (`make bench`).

Each figure is measured beside the raw figure of the underlying server in the same run,
so the ratio shows what our code adds. Never run as part of the test suite.
"""
