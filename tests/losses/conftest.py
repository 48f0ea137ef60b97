"""Shared fixtures for the loss tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tensors here are tiny: extra threads only add synchronisation, which a busy machine makes very slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
