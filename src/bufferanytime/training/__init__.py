"""Training: upgrade an image prior to a video model on unlabelled videos (``train(TrainConfig(...))``, Sec. 3, 7),
and the small priors of the embedded models (``training.prior``); options, data, objectives, checkpoints, cache,
and the watch of several processes (``training.distributed``)."""

from bufferanytime.training.cache import ClipCache
from bufferanytime.training.config import TrainConfig, read_config_file
from bufferanytime.training.data import ClipDataset, ClipSampler, ClipSpec, VideoInfo, discover_videos, read_clip
from bufferanytime.training.ema import EMA
from bufferanytime.training.objectives import DepthObjective, NormalObjective, Objective, objective_class
from bufferanytime.training.trainer import Trainer, train, weights_digest

__all__ = [
    "EMA",
    "ClipCache",
    "ClipDataset",
    "ClipSampler",
    "ClipSpec",
    "DepthObjective",
    "NormalObjective",
    "Objective",
    "TrainConfig",
    "Trainer",
    "VideoInfo",
    "discover_videos",
    "objective_class",
    "read_clip",
    "read_config_file",
    "train",
    "weights_digest",
]
