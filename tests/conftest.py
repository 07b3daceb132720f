"""Shared pytest wiring: each area keeps its fixtures in its own plugin module under tests/plugins."""

pytest_plugins = [
    "tests.plugins.telegram",
    "tests.plugins.exchanges",
    "tests.plugins.strata",
    "tests.plugins.postgres",
]
