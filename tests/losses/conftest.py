"""Shared fixtures for the loss tests."""

import pytest


@pytest.fixture(autouse=True)
def _tiny_tensors_one_thread(one_torch_thread):
    """Every test here runs on tiny tensors: one torch thread (fixture in tests/conftest.py)."""
