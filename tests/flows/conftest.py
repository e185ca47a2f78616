"""Every test under tests/flows runs on the shared Prefect harness."""

import pytest


@pytest.fixture(autouse=True)
def _harness(prefect_harness: None) -> None:
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/flows" in str(item.fspath):
            item.add_marker(pytest.mark.flow)
