"""Small data generators and settings shared by tests."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread inside the ``with``, then the previous count again.

    For tiny tensors extra threads only add synchronisation, which a busy machine makes very slow; runs compared
    bit for bit must also use the same thread count. The fixtures of that name (per test in tests/conftest.py,
    per module and automatic in tests/training/conftest.py) are this, at their scope.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def saved_bytes(forward: Callable[[], torch.Tensor]) -> tuple[int, torch.Tensor]:
    """Bytes of the distinct tensors autograd keeps for the backward pass of ``forward()``, and its output: what
    gradient checkpointing is meant to shrink."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.data_ptr()] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    return sum(saved.values()), out


def moving_pattern(frames: int = 6, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random texture translating one pixel per frame: ``(T, H, W, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    base = rng.random((height // 4 + 2, (width + frames) // 4 + 2, 3))
    big = cv2.resize(base, ((width + frames) + 8, height + 8), interpolation=cv2.INTER_CUBIC)
    clip = np.stack([big[4 : 4 + height, t : t + width] for t in range(frames)])
    return (np.clip(clip, 0, 1) * 255).astype(np.uint8)


def run_main(capsys, *argv: str) -> tuple[int, list[str]]:
    """``bufferanytime ARGV`` in process: its exit code (argparse's too) and its stderr lines."""
    from bufferanytime.cli.main import main

    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse errors
        code = exc.code
    return code, capsys.readouterr().err.strip().splitlines()


def files_under(path: Path) -> list[Path]:
    """Every file below ``path`` (none when it does not exist)."""
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def default_sigint() -> None:
    """Restore SIGINT's default in a child process (``preexec_fn``): a shell's background job (``make test &``,
    nohup) starts with SIGINT ignored, and Python then never turns it into KeyboardInterrupt, so a test's Ctrl-C
    would not reach the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def launcher_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a process-launcher test (torchrun, ``accelerate launch``): one torch thread per process,
    and the system's temporary folder moved under ``tmp``, where the launcher writes a log folder of its own that
    it never removes."""
    scratch = Path(tmp) / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch), **extra}


def settled(head, expected: int, timeout: float = 60.0) -> int:
    """Items a ``HeadStart`` holds once it has taken ``expected`` or its thread has ended (waiting at most ``timeout``
    s), a moment later: a thread waiting at its limit takes no more, so a count above the limit shows."""
    deadline = time.monotonic() + timeout
    while head.taken < expected and head._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    return head.taken
