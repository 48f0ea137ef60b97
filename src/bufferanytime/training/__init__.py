"""Training: upgrade an image prior (Depth Anything V2, Marigold-E2E-FT) to a video model with unlabelled videos.

``train(TrainConfig(...))`` runs the paper's recipe (Sec. 3.1, 3.2, 7): a regularization loss to the frozen image
prior on one random frame per clip plus the optical-flow based stabilization loss on all frames, AdamW with a
linear warm-up, an exponential moving average of the weights. ``bufferanytime train`` is its command line.
"""

from bufferanytime.training.cache import ClipCache
from bufferanytime.training.config import TrainConfig, read_config_file
from bufferanytime.training.data import ClipDataset, ClipSampler, ClipSpec, VideoInfo, discover_videos, read_clip
from bufferanytime.training.ema import EMA
from bufferanytime.training.objectives import DepthObjective, NormalObjective
from bufferanytime.training.trainer import Trainer, train, weights_digest

__all__ = [
    "EMA",
    "ClipCache",
    "ClipDataset",
    "ClipSampler",
    "ClipSpec",
    "DepthObjective",
    "NormalObjective",
    "TrainConfig",
    "Trainer",
    "VideoInfo",
    "discover_videos",
    "read_clip",
    "read_config_file",
    "train",
    "weights_digest",
]
