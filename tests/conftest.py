"""Fixtures live in tests/fixtures/, one module per real component."""

pytest_plugins = [
    "tests.fixtures.common_fixtures",
]
