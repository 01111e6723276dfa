"""Shared test fixtures: the real data directory (``$RANKWISE_DATA`` or ``../shared/data``)."""

from pathlib import Path

import pytest

from eval.datasets.paths import default_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    if not (path / "beir" / "scifact").is_dir():
        pytest.fail(f"real data not found at {path}: set RANKWISE_DATA to the shared data folder")
    return path
