"""Shared fixtures: the small sample models and their data, loaded once per session."""

import os

import pytest

os.environ.setdefault("FEATHERWEIGHT_CACHE", os.path.join(os.path.dirname(__file__), "..", ".featherweight",
                                                          "cache"))


@pytest.fixture(scope="session")
def digits_mlp():
    from core.io.model import load_model

    return load_model("sample:digits-mlp")


@pytest.fixture(scope="session")
def digits_cnn():
    from core.io.model import load_model

    return load_model("sample:digits-cnn")


@pytest.fixture(scope="session")
def digits_mlp_data(digits_mlp):
    from core.io.data import load_data

    return load_data("sample:digits", digits_mlp)


@pytest.fixture(scope="session")
def digits_cnn_data(digits_cnn):
    from core.io.data import load_data

    return load_data("sample:digits", digits_cnn)


@pytest.fixture(scope="session")
def shapes_mobile():
    from core.io.model import load_model

    return load_model("sample:shapes-mobile")


@pytest.fixture(scope="session")
def shapes_mobile_data(shapes_mobile):
    from core.io.data import load_data

    return load_data("sample:shapes", shapes_mobile)


@pytest.fixture
def fast_bench():
    """A benchmark config that times little: tests check behaviour, `make bench` checks speed."""
    from core.spec.recipe import BenchmarkConfig

    return BenchmarkConfig(batch_sizes=(1, 32), threads=1, warmup=1, runs=5, max_seconds=1.0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Train on one thread (the test box is shared), restoring the setting for other test modules."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
