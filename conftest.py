"""Shared fixtures for every test in the repository (servers on free ports, isolation)."""

pytest_plugins = ["crmkit.testing"]
