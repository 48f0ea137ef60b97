"""Every family built on a transformers depth model, taken per frame, gives exactly what the library's own model
gives on the same pixels: the video model chains the library's modules as the library does (its decoder is the
prior's, untouched, when no temporal block runs). Runs over every registered transformers family; nothing here
names one."""

from __future__ import annotations

import pytest
import torch

from bufferanytime.families import get_family, list_families
from bufferanytime.models import load_model
from bufferanytime.models.base import TransformersVideoModel

TRANSFORMERS_FAMILIES = [name for name in list_families()
                         if issubclass(get_family(name).model_class, TransformersVideoModel)]


@pytest.mark.parametrize("name", TRANSFORMERS_FAMILIES)
def test_per_frame_model_is_the_library_model(name, tmp_path, one_torch_thread):
    family = get_family(name)
    prior_dir = family.make_tiny_prior(tmp_path / "prior")
    model = load_model(prior_dir, per_frame=True).eval()
    library = family.model_class.prior_class.from_pretrained(str(prior_dir)).eval()
    # square: transformers' own plain-ViT DPT assumes a square patch grid (the video model passes the true one)
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pixel_values = model.preprocess(images)
        expected = library(pixel_values=pixel_values).predicted_depth
        got = model.decode_head(model.backbone_features(pixel_values), 2, tuple(pixel_values.shape[-2:]))
    assert got.shape == expected.shape
    assert torch.equal(got, expected)
    assert float(expected.max() - expected.min()) > 1e-3  # an informative prior: a wrong chaining would show
