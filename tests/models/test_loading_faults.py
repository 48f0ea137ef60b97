"""Corrupt, truncated or non-finite model weights, and missing priors: one ``error:`` line naming the file, exit 2,
through every command that loads a model (depth, normal, eval, train), and nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from bufferanytime.errors import InputError
from bufferanytime.models import load_model
from bufferanytime.models.base import CORRUPT_WEIGHTS, DIGEST_KEY, WEIGHTS_NAME
from bufferanytime.synthetic import render_video, write_video_dir
from tests.helpers import files_under, run_main

PRIOR_WEIGHTS = {"depth": "model.safetensors", "normal": "unet/diffusion_pytorch_model.safetensors"}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, tiny_depth_prior, tiny_normal_prior) -> dict[str, Path]:
    """A saved video model of each kind, its prior copied inside (so each test can corrupt its own copy)."""
    root = tmp_path_factory.mktemp("video_models")
    for kind, prior in (("depth", tiny_depth_prior), ("normal", tiny_normal_prior)):
        load_model(kind, str(prior)).save_pretrained(root / kind, copy_prior=True)
    return {"depth": root / "depth", "normal": root / "normal"}


@pytest.fixture()
def frames(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(folder / f"{k:03d}.png")
    return folder


def _copy(model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model, tmp_path / "model"))


def truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def flip_header_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[12] ^= 0xFF  # inside the JSON header that follows the 8-byte length
    file.write_bytes(bytes(data))


def header_length(file: Path) -> int:
    return 8 + int.from_bytes(file.read_bytes()[:8], "little")


def flip_data_byte(file: Path) -> None:
    """One byte of one weight changed: caught by the checksum of a file this package wrote."""
    data = bytearray(file.read_bytes())
    data[header_length(file) + 5] ^= 0x01
    file.write_bytes(bytes(data))


def make_data_non_finite(file: Path) -> None:
    """The top bytes of the first float32 of the data set to an all-ones exponent: the weight becomes inf/NaN."""
    data = bytearray(file.read_bytes())
    start = header_length(file)
    data[start + 2] |= 0x80
    data[start + 3] = 0x7F
    file.write_bytes(bytes(data))


def _predict(capsys, kind: str, frames: Path, model: Path, out: Path) -> tuple[int, list[str]]:
    return run_main(capsys, kind, str(frames), "-o", str(out), "--model", str(model), "--device", "cpu", "-q")


@pytest.mark.parametrize("kind", ["depth", "normal"])
@pytest.mark.parametrize(
    ("fault", "target", "message"),
    [
        (truncate, WEIGHTS_NAME, CORRUPT_WEIGHTS),
        (flip_header_byte, WEIGHTS_NAME, CORRUPT_WEIGHTS),
        (flip_data_byte, WEIGHTS_NAME, "does not match its checksum"),
        (truncate, "prior", CORRUPT_WEIGHTS),
        (flip_header_byte, "prior", CORRUPT_WEIGHTS),
        (make_data_non_finite, "prior", "1 non-finite weight value(s) (NaN or inf)"),
    ],
)
def test_corrupt_weights_are_one_line_naming_the_file(kind, fault, target, message, saved_models, frames, tmp_path,
                                                      capsys):
    model = _copy(saved_models[kind], tmp_path)
    file = model / (f"prior/{PRIOR_WEIGHTS[kind]}" if target == "prior" else target)
    fault(file)
    damaged = file.read_bytes()
    out = tmp_path / "out"
    code, err = _predict(capsys, kind, frames, model, out)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {file}: ") and message in err[0]
    assert files_under(out) == []
    assert file.read_bytes() == damaged  # the model is left as it was


def test_video_model_with_nan_weights_is_refused(saved_models, frames, tmp_path, capsys):
    """A diverged run's weights (NaN, but a valid file with a matching checksum) never give NaN outputs."""
    model = _copy(saved_models["depth"], tmp_path)
    video = load_model("depth", str(model))
    with torch.no_grad():
        video.temporal[0].parameters().__next__().view(-1)[:3] = float("nan")
        video.head.conv3.bias.fill_(float("inf"))
    video.save_pretrained(model)
    with safe_open(str(model / WEIGHTS_NAME), "pt") as f:
        assert DIGEST_KEY in f.metadata()
    out = tmp_path / "out"
    code, err = _predict(capsys, "depth", frames, model, out)
    bad = 3 + video.head.conv3.bias.numel()
    assert code == 2 and err == [
        f"error: {model / WEIGHTS_NAME}: {bad} non-finite weight value(s) (NaN or inf); the model is unusable"]
    assert files_under(out) == []


@pytest.mark.parametrize("part", ["vae", "embedding"])
def test_normal_prior_with_nan_weights_is_refused(part, tiny_normal_prior, tmp_path):
    prior = Path(shutil.copytree(tiny_normal_prior, tmp_path / "prior"))
    name = "vae/diffusion_pytorch_model.safetensors" if part == "vae" else "empty_prompt_embedding.safetensors"
    file = prior / name
    with safe_open(str(file), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        metadata = f.metadata()
    state[sorted(state)[0]].view(-1)[:2] = float("nan")
    save_file(state, str(file), metadata=metadata)
    with pytest.raises(InputError) as exc:
        load_model("normal", str(prior))
    assert str(exc.value) == f"{file}: 2 non-finite weight value(s) (NaN or inf); the model is unusable"


def test_missing_prior_names_the_resolved_path(saved_models, frames, tmp_path, capsys):
    model = _copy(saved_models["depth"], tmp_path)
    shutil.rmtree(model / "prior")
    code, err = _predict(capsys, "depth", frames, model, tmp_path / "out")
    assert code == 2 and err == [
        f"error: {(model / 'prior').absolute()}: no such prior directory (prior 'prior' of {model / 'config.json'}, "
        f"resolved against {model.absolute()})"
    ]
    assert files_under(tmp_path / "out") == []


def test_missing_hub_prior_says_where_it_looked(saved_models, tmp_path, monkeypatch):
    """A Hub id as prior, unavailable offline: the message names the model's config and its folder."""
    import huggingface_hub

    def offline(repo_id, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    model = _copy(saved_models["depth"], tmp_path)
    config = json.loads((model / "config.json").read_text()) | {"prior": "someone/missing-prior"}
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError) as exc:
        load_model("depth", str(model))
    assert str(exc.value).startswith("someone/missing-prior: no such model directory (looked for ")
    assert str(exc.value).endswith(f"(the prior of {model / 'config.json'}; not in {model.absolute()} either)")
    assert "cannot load it from the Hugging Face Hub (LocalEntryNotFoundError)" in str(exc.value)


def test_missing_model_directory_names_the_absolute_path(frames, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _predict(capsys, "depth", frames, Path("models/v2/mine"), tmp_path / "out")  # not a Hub id: no network
    assert code == 2 and err == [f"error: models/v2/mine: no such model directory (looked for "
                                 f"{Path.cwd() / 'models/v2/mine'}), nor a Hugging Face id like 'org/name'"]
    assert files_under(tmp_path / "out") == []


def test_config_that_is_not_json_is_one_line(saved_models, tmp_path):
    model = _copy(saved_models["depth"], tmp_path)
    (model / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json: cannot read the model config"):
        load_model("depth", str(model))


def test_eval_and_train_refuse_a_truncated_model(saved_models, tmp_path, capsys):
    model = _copy(saved_models["depth"], tmp_path)
    truncate(model / WEIGHTS_NAME)
    data = tmp_path / "data"
    write_video_dir(render_video(0, 3, (16, 16)), data / "seq_000000")
    report = tmp_path / "report"
    code, err = run_main(capsys, "eval", "depth", "--dataset", "synthetic", "--root", str(data), "--model", str(model),
                     "--flow", "gt", "--device", "cpu", "-o", str(report), "-q")
    assert code == 2 and err == [f"error: {model / WEIGHTS_NAME}: {CORRUPT_WEIGHTS}"]
    assert not report.exists()
    run = tmp_path / "run"
    code, err = run_main(capsys, "train", "depth", "--data", str(data), "--model", str(model), "--out", str(run),
                     "--steps", "1", "-q")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and str(model / WEIGHTS_NAME) in err[0]
