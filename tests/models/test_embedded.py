"""The embedded `tiny-synthetic` models: shipped small, loaded when no model is named, steadier than their priors."""

import numpy as np
import pytest

from bufferanytime.evaluation.consistency import SequenceFlows, opw
from bufferanytime.inference import InferenceSettings, predict_frames
from bufferanytime.io.arrays import flows_from_disk
from bufferanytime.models import DEFAULT_MODEL, WEIGHTS_DIR, load_model
from bufferanytime.synthetic import render_video

MAX_FILE_BYTES = 20 * 2**20  # the limit per shipped file
HELD_OUT_SEED = 777001  # never used to train or select them (seeds: scripts/train_embedded.sh)


def test_shipped_weights_are_small_safetensors():
    files = [f for f in (WEIGHTS_DIR / "tiny-synthetic").rglob("*") if f.is_file()]
    weights = [f for f in files if f.suffix == ".safetensors"]
    assert {f.relative_to(WEIGHTS_DIR).parts[1] for f in weights} == {"depth", "normal"}
    assert all(f.stat().st_size < MAX_FILE_BYTES for f in files)
    assert not [f for f in files if f.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"}]


@pytest.mark.parametrize("kind", ["depth", "normal"])
def test_default_model_is_embedded_and_steadier_than_its_prior(kind, one_torch_thread):
    """On an unseen flickering video the video model's OPW (ground-truth flow) is well below its prior's."""
    assert DEFAULT_MODEL[kind] == "tiny-synthetic"
    video = render_video(HELD_OUT_SEED, 12, (96, 128), flicker=0.3, exposure=0.1, noise=0.01)
    flows = SequenceFlows.from_flows(
        flows_from_disk(video.flow_fwd), flows_from_disk(video.flow_bwd), video.flow_valid_fwd, video.flow_valid_bwd,
        method="ground truth",
    )
    settings = InferenceSettings(max_res=128, device="cpu")
    score = {}
    for per_frame in (True, False):
        model = load_model(kind, per_frame=per_frame)
        score[per_frame] = opw(np.stack(list(predict_frames(model, iter(video.rgb), settings))), flows=flows)
    assert score[False] < 0.8 * score[True], score
