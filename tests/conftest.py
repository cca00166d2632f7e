"""Fixtures live in tests/fixtures/, one module per real component."""

pytest_plugins = [
    "tests.fixtures.prefect",  # first: isolates PREFECT_HOME before anything imports prefect
    "tests.fixtures.forecast_fixtures",
    "tests.fixtures.common_fixtures",
    "tests.fixtures.exchange",
    "tests.fixtures.influx",
    "tests.fixtures.site",
    "tests.fixtures.lifecycle",
]
