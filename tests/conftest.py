"""Fixtures shared by the whole test suite."""

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixture_data_dir() -> Path:
    """The committed MNIST subset: 2000 training and 500 test digits (tests/fixtures/mnist)."""
    return FIXTURES / "mnist"
