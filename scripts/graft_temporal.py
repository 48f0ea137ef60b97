"""Start a video depth model from PRIOR with the temporal blocks of an already trained VIDEO_MODEL.

Used for the embedded `tiny-synthetic-metric` model (scripts/train_embedded.sh): its metric prior has the
architecture of the relative tiny-synthetic prior, so the relative video model's temporal blocks fit it; the neck
and head stay the metric prior's own. Usage: python scripts/graft_temporal.py PRIOR VIDEO_MODEL OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

from bufferanytime.models import load_model
from bufferanytime.models.base import WEIGHTS_NAME, read_weights


def graft(prior: str, video_model: str, out: str) -> None:
    model = load_model("depth", prior)
    donor = read_weights(Path(video_model) / WEIGHTS_NAME)
    temporal = {k: v for k, v in donor.items() if k.startswith("temporal.")}
    own = model.state_dict()
    if not temporal or any(own[k].shape != v.shape for k, v in temporal.items()):
        raise SystemExit(f"the temporal blocks of {video_model} do not fit {prior}")
    model.load_state_dict(temporal, strict=False)
    model.clip_len = load_model("depth", video_model).clip_len
    model.input_size = load_model("depth", video_model).input_size
    model.save_pretrained(out, copy_prior=True)
    print(f"wrote {out}: {len(temporal)} temporal tensors from {video_model}, neck and head from {prior}")


if __name__ == "__main__":
    graft(*sys.argv[1:4])
