"""The shipped weights (embedded models and their priors) carry tensor checksums (``tensors_sha256.json``), checked
at load: a flipped byte in a shipped file, or a shipped folder without its checksums, is one ``error:`` line naming
the file, exit 2, and nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bufferanytime.models import EMBEDDED_NAME, MODELS, WEIGHTS_DIR
from bufferanytime.models import base as model_base
from bufferanytime.models.base import CORRUPT_WEIGHTS, DIGESTS_NAME, WEIGHTS_NAME, write_shipped_digests
from tests.helpers import files_under, run_main
from tests.models.test_loading_faults import flip_data_byte


def test_every_shipped_weight_file_has_an_up_to_date_checksum(tmp_path):
    """The committed checksum files are what the script writes now: none missing, none stale, no file twice."""
    copy = Path(shutil.copytree(WEIGHTS_DIR, tmp_path / "weights"))
    for file in copy.rglob(DIGESTS_NAME):
        file.unlink()
    written = write_shipped_digests(copy)
    assert sorted(f.relative_to(copy) for f in written) == sorted(
        f.relative_to(WEIGHTS_DIR) for f in WEIGHTS_DIR.rglob(DIGESTS_NAME))
    for file in written:
        assert file.read_text() == (WEIGHTS_DIR / file.relative_to(copy)).read_text(), file
    listed = [f.parent / name for f in copy.rglob(DIGESTS_NAME) for name in model_base.read_digests(f.parent)]
    assert sorted(listed) == sorted(copy.rglob("*.safetensors"))


@pytest.fixture()
def shipped_copy(tmp_path, monkeypatch) -> Path:
    """The embedded models copied, and registered in place of the shipped ones (so each test damages its own)."""
    root = Path(shutil.copytree(WEIGHTS_DIR, tmp_path / "weights"))
    monkeypatch.setattr(model_base, "SHIPPED_DIR", root.resolve())
    for kind in MODELS.get(EMBEDDED_NAME):
        monkeypatch.setitem(MODELS.get(EMBEDDED_NAME), kind, root / EMBEDDED_NAME / kind)
    return root / EMBEDDED_NAME


@pytest.fixture()
def frames(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(folder / f"{k:03d}.png")
    return folder


@pytest.mark.parametrize(("kind", "part"), [("depth", WEIGHTS_NAME), ("depth", "prior/model.safetensors"),
                                            ("normal", WEIGHTS_NAME),
                                            ("normal", "prior/unet/diffusion_pytorch_model.safetensors")])
def test_flipped_byte_in_a_shipped_file_is_one_line(kind, part, shipped_copy, frames, tmp_path, capsys):
    file = shipped_copy / kind / part
    flip_data_byte(file)
    damaged = file.read_bytes()
    out = tmp_path / "out"
    code, err = run_main(capsys, kind, str(frames), "-o", str(out), "--device", "cpu", "-q")
    assert code == 2 and err == [f"error: {file}: {CORRUPT_WEIGHTS}: its content does not match its checksum"]
    assert files_under(out) == []
    assert file.read_bytes() == damaged


def test_flipped_byte_in_a_shared_prior_is_caught_through_the_causal_model(shipped_copy, frames, tmp_path, capsys):
    """The causal models use tiny-synthetic's priors by reference: those are checked too."""
    causal = shipped_copy.parent / "tiny-synthetic-causal" / "depth"
    file = causal / "../../tiny-synthetic/depth/prior" / WEIGHTS_NAME  # named as its config.json refers to it
    flip_data_byte(file)
    code, err = run_main(capsys, "depth", str(frames), "-o", str(tmp_path / "out"), "--device", "cpu", "-q",
                         "--model", str(causal))
    assert code == 2 and err == [f"error: {file}: {CORRUPT_WEIGHTS}: its content does not match its checksum"]
    assert files_under(tmp_path / "out") == []


def test_shipped_model_without_its_checksums_is_refused(shipped_copy, frames, tmp_path, capsys):
    (shipped_copy / "depth" / DIGESTS_NAME).unlink()
    code, err = run_main(capsys, "depth", str(frames), "-o", str(tmp_path / "out"), "--device", "cpu", "-q")
    assert code == 2 and err == [f"error: {shipped_copy / 'depth' / DIGESTS_NAME}: missing: the shipped weights of "
                                 f"{shipped_copy / 'depth'} cannot be verified (reinstall bufferanytime)"]
    assert files_under(tmp_path / "out") == []


def test_intact_shipped_model_still_runs(shipped_copy, frames, tmp_path, capsys):
    code, err = run_main(capsys, "depth", str(frames), "-o", str(tmp_path / "out"), "--device", "cpu", "-q")
    assert code == 0 and err == []
    assert (tmp_path / "out" / "frames" / "depth.npz").is_file()
