"""The Marigold families beside Marigold-E2E-FT: which family a MarigoldNormalsPipeline folder belongs to (the
registration markers), what the depth and the v1-1 normals models decode to, and the checkpoints they refuse."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import MarigoldDepthPipeline

from bufferanytime.families import FAMILIES, family_name_of
from bufferanytime.families.marigold_depth import make_tiny_marigold_depth_prior
from bufferanytime.families.marigold_normals import STEPS_KEY, make_tiny_marigold_normals_prior, set_index_keys
from bufferanytime.io.video import write_video
from bufferanytime.models import load_model
from bufferanytime.tasks import DEPTH, NORMAL
from bufferanytime.testing import make_tiny_normal_prior
from tests.helpers import files_under, moving_pattern, one_torch_thread, run_main


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def depth_prior(tmp_path_factory):
    return make_tiny_marigold_depth_prior(tmp_path_factory.mktemp("priors") / "marigold-depth")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, moving_pattern(frames=3), fps=10)
    return path


def _frames(count: int = 2, size: tuple[int, int] = (32, 48)) -> torch.Tensor:
    return torch.rand(1, count, 3, *size, generator=torch.Generator().manual_seed(0))


def test_the_most_specific_registration_claims_a_marigold_normals_folder(tmp_path):
    e2e = make_tiny_normal_prior(tmp_path / "e2e")
    v11 = make_tiny_marigold_normals_prior(tmp_path / "v1-1")
    assert json.loads((v11 / "model_index.json").read_text())[STEPS_KEY] == 4  # as prs-eth's v1-1 checkpoints
    claimed = {name for name in FAMILIES if "MarigoldNormalsPipeline" in FAMILIES.get(name).class_names}
    v11_family, e2e_family = family_name_of(v11), family_name_of(e2e)
    assert {v11_family, e2e_family} == claimed and v11_family != e2e_family
    assert FAMILIES.get(v11_family).markers and not FAMILIES.get(e2e_family).markers
    set_index_keys(v11, **{STEPS_KEY: 10})  # a marker value no registration names: the unmarked family
    assert family_name_of(v11) == e2e_family
    index = json.loads((v11 / "model_index.json").read_text())
    del index[STEPS_KEY]
    (v11 / "model_index.json").write_text(json.dumps(index))
    assert family_name_of(v11) == e2e_family


def test_v1_1_normals_are_the_e2e_normals_without_the_x_flip(tmp_path):
    v11 = make_tiny_marigold_normals_prior(tmp_path / "v1-1")
    e2e = tmp_path / "e2e"  # the same weights, read as an E2E-FT checkpoint (a single-step model_index.json)
    shutil.copytree(v11, e2e)
    set_index_keys(e2e, **{STEPS_KEY: 1})
    v11_model, e2e_model = load_model(v11, per_frame=True).eval(), load_model(e2e, per_frame=True).eval()
    assert v11_model.family_name != e2e_model.family_name
    frames = _frames()
    with torch.no_grad():
        a, b = e2e_model(frames), v11_model(frames)
    assert torch.equal(b[:, :, 1:], a[:, :, 1:]) and torch.equal(b[:, :, 0], -a[:, :, 0])
    assert (b[:, :, 0].abs() > 1e-3).any()  # the flip is seen


def test_a_copied_v1_1_prior_keeps_its_family(tmp_path):
    model = load_model(make_tiny_marigold_normals_prior(tmp_path / "v1-1"))
    model.save_pretrained(tmp_path / "video", copy_prior=True)
    assert family_name_of(tmp_path / "video" / "prior") == model.family_name


def test_marigold_depth_outputs_one_minus_the_pipelines_depth(depth_prior):
    """Nearness = 1 - diffusers' own decode_prediction (affine-invariant depth in [0, 1]) on the same latents."""
    model = load_model(depth_prior, per_frame=True).eval()
    assert model.task is DEPTH
    pipeline = MarigoldDepthPipeline(unet=model.unet, vae=model.vae, scheduler=model.scheduler, text_encoder=None,
                                     tokenizer=None, prediction_type="depth")
    frames = _frames()
    with torch.no_grad():
        latents = model.predict_latents(model.encode_latents(frames)).flatten(0, 1)
        depth = pipeline.decode_prediction(latents)[:, 0]
        nearness = model(frames)[0]
    assert nearness.shape == depth.shape == (2, 32, 48)
    assert torch.allclose(nearness, 1 - depth, atol=1e-6) and float(depth.std()) > 1e-4


def test_a_copied_depth_prior_keeps_its_prediction_type_and_steps(tmp_path, depth_prior):
    model = load_model(depth_prior)
    model.save_pretrained(tmp_path / "video", copy_prior=True)
    index = json.loads((tmp_path / "video" / "prior" / "model_index.json").read_text())
    original = json.loads((depth_prior / "model_index.json").read_text())
    assert {k: index[k] for k in ("_class_name", "prediction_type", STEPS_KEY)} == {
        k: original[k] for k in ("_class_name", "prediction_type", STEPS_KEY)}


def _refused(capsys, tmp_path, kind: str, model, clip) -> str:
    out = tmp_path / "out"
    code, err = run_main(capsys, kind, str(clip), "-o", str(out), "--model", str(model), "-q")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not files_under(out)
    return err[0]


def test_normals_from_a_marigold_depth_prior_are_refused(capsys, tmp_path, clip, depth_prior):
    line = _refused(capsys, tmp_path, NORMAL.name, depth_prior, clip)
    assert str(depth_prior) in line and f"makes {DEPTH.kind} models, not {NORMAL.name}" in line


@pytest.mark.parametrize("component", ["unet", "vae", "scheduler"])
def test_a_marigold_depth_folder_missing_a_component_names_it(capsys, tmp_path, clip, depth_prior, component):
    broken = tmp_path / "broken"
    shutil.copytree(depth_prior, broken)
    shutil.rmtree(broken / component)
    line = _refused(capsys, tmp_path, DEPTH.name, broken, clip)
    assert str(broken) in line and f"missing {component}/" in line and "Marigold depth" in line


def test_a_marigold_depth_folder_without_prompt_embedding_or_text_encoder_is_refused(capsys, tmp_path, clip,
                                                                                    depth_prior):
    broken = tmp_path / "broken"
    shutil.copytree(depth_prior, broken)
    (broken / "empty_prompt_embedding.safetensors").unlink()
    line = _refused(capsys, tmp_path, DEPTH.name, broken, clip)
    assert "text_encoder/" in line and str(broken) in line


def test_an_unsupported_prediction_type_is_refused(capsys, tmp_path, clip, depth_prior):
    broken = tmp_path / "broken"
    shutil.copytree(depth_prior, broken)
    set_index_keys(broken, prediction_type="normals")
    line = _refused(capsys, tmp_path, DEPTH.name, broken, clip)
    assert "prediction_type 'normals'" in line
