"""Shared fixtures: tiny random priors (built once per session) and the shared real data, when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bufferanytime.io.video import write_video
from bufferanytime.testing import make_tiny_normal_prior, make_tiny_prior
from tests.helpers import moving_pattern, one_torch_thread

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_configure(config) -> None:
    """Under pytest-xdist (``make test`` runs one worker per CPU) each worker's torch takes its share of the CPUs:
    every worker on every CPU would oversubscribe them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared (real sample data) is not present")
    return SHARED


@pytest.fixture(scope="session")
def tiny_depth_prior(tmp_path_factory) -> Path:
    return make_tiny_prior("depth", tmp_path_factory.mktemp("priors") / "tiny-depth")


@pytest.fixture(scope="session")
def tiny_normal_prior(tmp_path_factory) -> Path:
    """In the embedded normal model's architecture (two U-Net levels), not the family's smaller conformance prior."""
    return make_tiny_normal_prior(tmp_path_factory.mktemp("priors") / "tiny-normal")


@pytest.fixture()
def small_video(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    write_video(path, moving_pattern(), fps=10)
    return path


@pytest.fixture(autouse=True)
def _auto_precision_is_fp32_on_cpu(monkeypatch):
    """``--precision auto`` (the command line's default) picks bf16 on CPUs with native bf16 only, so the same test
    would run bf16 on one machine and fp32 on another; tests compare with fp32 references, so on CPU auto resolves
    to fp32 here. tests/inference/test_precision.py tests the choice itself."""
    from bufferanytime.inference import precision

    monkeypatch.setattr(precision, "cpu_bf16_features", frozenset)  # no native bf16 flags


@pytest.fixture(name="one_torch_thread")
def _one_torch_thread():
    """One torch thread for this test (see :func:`tests.helpers.one_torch_thread`)."""
    with one_torch_thread():
        yield
