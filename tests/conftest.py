"""Shared fixtures: tiny synthetic data sets in the real on-disk formats, generated once per session."""
import pytest

from dataloaders.synthetic import generate_synthetic


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> dict:
    """{'gsv_cities': root, 'pitts': root, 'msls': root} of the tiny synthetic data sets."""
    return generate_synthetic(tmp_path_factory.mktemp("synthetic"), scale="tiny", seed=0)
