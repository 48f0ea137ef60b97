"""The embedded causal models `tiny-synthetic-causal`: shipped small beside tiny-synthetic (sharing its priors),
loaded as causal, and, streamed one frame at a time, steadier than their priors."""

import json

import numpy as np
import pytest
import torch

from bufferanytime.evaluation.consistency import SequenceFlows, opw
from bufferanytime.inference.online import OnlinePredictor, predict_online
from bufferanytime.inference.pipeline import InferenceSettings, predict_frames
from bufferanytime.io.arrays import flows_from_disk
from bufferanytime.models import CAUSAL_EMBEDDED_NAME, MODELS, WEIGHTS_DIR, load_model
from bufferanytime.synthetic import render_video

MAX_FILE_BYTES = 20 * 2**20  # the limit per shipped file
HELD_OUT_SEED = 777002  # never used to train or select them (seeds: scripts/train_embedded.sh)
KINDS = sorted(MODELS.get(CAUSAL_EMBEDDED_NAME)) if CAUSAL_EMBEDDED_NAME in MODELS else []


def test_shipped_files_are_small_safetensors_that_reuse_the_bidirectional_priors():
    root = WEIGHTS_DIR / CAUSAL_EMBEDDED_NAME
    files = [f for f in root.rglob("*") if f.is_file()]
    assert {f.relative_to(root).parts[0] for f in files if f.suffix == ".safetensors"} == {"depth", "normal"}
    assert all(f.stat().st_size < MAX_FILE_BYTES for f in files)
    assert not [f for f in files if f.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"}]
    for kind in ("depth", "normal"):
        config = json.loads((root / kind / "config.json").read_text())
        assert config["prior"] == f"../../tiny-synthetic/{kind}/prior"  # a reference, not a second copy
        assert config["temporal"]["causal"] and config["temporal"]["horizon"] == config["clip_len"]


@pytest.mark.parametrize("kind", KINDS)
def test_streamed_causal_model_is_steadier_than_its_prior(kind, one_torch_thread):
    """On an unseen flickering video the streamed causal model's OPW (ground-truth flow) is well below its prior's."""
    model = load_model(kind, CAUSAL_EMBEDDED_NAME)
    assert model.temporal_config.causal
    video = render_video(HELD_OUT_SEED, 12, (96, 128), flicker=0.3, exposure=0.1, noise=0.01)
    flows = SequenceFlows.from_flows(
        flows_from_disk(video.flow_fwd), flows_from_disk(video.flow_bwd), video.flow_valid_fwd, video.flow_valid_bwd,
        method="ground truth",
    )
    settings = InferenceSettings(max_res=128, device="cpu")
    streamed = np.stack(list(predict_online(OnlinePredictor(model, "stream"), iter(video.rgb), settings)))
    prior = np.stack(list(predict_frames(load_model(kind, CAUSAL_EMBEDDED_NAME, per_frame=True), iter(video.rgb),
                                         settings)))
    assert opw(streamed, flows=flows) < 0.8 * opw(prior, flows=flows)
    assert torch.isfinite(torch.from_numpy(streamed)).all()
