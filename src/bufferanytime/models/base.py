"""What the depth and the normal video models share: loading priors, and saving only what training changes.

A saved video model is a directory with

- ``config.json``: ``{"bufferanytime_model": kind, "prior": REF, "temporal": {...}, "version": ...}``, where REF
  is a Hugging Face id, an absolute path, or a path relative to the directory (a copied prior);
- ``model.safetensors``: the trainable weights only (for depth the DPT head and temporal blocks, for normals the
  temporal blocks); the frozen rest comes from the prior.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bufferanytime import __version__
from bufferanytime.errors import InputError
from bufferanytime.models.temporal import TemporalConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PRIOR_SUBDIR = "prior"
MODEL_KEY = "bufferanytime_model"  # marks a config.json as a video model of this package


def resolve_dir(name_or_path: str | Path) -> Path:
    """A local directory as is; otherwise a Hugging Face Hub id, downloaded (or found in the local cache)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise InputError(f"{path}: expected a model directory, got a file")
    if str(name_or_path).count("/") != 1 or str(name_or_path).startswith((".", "/")):
        raise InputError(f"{name_or_path}: no such model directory (nor a Hugging Face id like 'org/name')")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path)))
    except Exception as exc:  # offline, unknown repo, ... all mean the same to the user
        raise InputError(
            f"{name_or_path}: cannot load from the Hugging Face Hub ({type(exc).__name__}); "
            "download it elsewhere and pass the local directory instead"
        ) from exc


def read_config(path: Path) -> dict | None:
    """The video-model config of a directory, or None when the directory is something else (e.g. a prior)."""
    file = path / CONFIG_NAME
    if not file.is_file():
        return None
    config = json.loads(file.read_text())
    return config if MODEL_KEY in config else None


class VideoModel(nn.Module):
    """Base of the video models: frozen prior parts, trainable parts named by ``trainable_prefixes``."""

    kind: str = ""
    trainable_prefixes: tuple[str, ...] = ()
    default_clip_len: int = 16

    #: Length of the clips the temporal blocks were trained on; inference windows default to it.
    clip_len: int

    def __init__(self, prior_ref: str, temporal_config: TemporalConfig, per_frame: bool):
        super().__init__()
        self.prior_ref = prior_ref
        self.temporal_config = temporal_config
        self.per_frame = per_frame
        self.clip_len = self.default_clip_len

    # -- subclasses implement -------------------------------------------------------------------------------
    @classmethod
    def from_prior(
        cls, name_or_path: str | Path, temporal: TemporalConfig | dict | None = None, per_frame: bool = False
    ) -> VideoModel:
        raise NotImplementedError

    @classmethod
    def copy_prior(cls, prior_ref: str, destination: Path) -> None:
        """Write the prior named by ``prior_ref`` into ``destination`` in its own on-disk format."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.trainable_prefixes)}

    def config_dict(self) -> dict:
        return {
            MODEL_KEY: self.kind,
            "prior": self.prior_ref,
            "temporal": self.temporal_config.to_dict(),
            "clip_len": self.clip_len,
            "version": __version__,
        }

    def save_pretrained(self, directory: str | Path, copy_prior: bool = False) -> None:
        """Save config and trainable weights; with ``copy_prior`` also the prior, making the folder self-contained."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config_dict()
        if copy_prior:
            if not (directory / PRIOR_SUBDIR).exists():
                self.copy_prior(self.prior_ref, directory / PRIOR_SUBDIR)
            config["prior"] = PRIOR_SUBDIR
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.trainable_state_dict().items()}
        tmp = directory / f".{WEIGHTS_NAME}.tmp-{os.getpid()}"
        save_file(state, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, directory / WEIGHTS_NAME)
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def prior_location(cls, directory: Path, config: dict) -> str:
        ref = config["prior"]
        local = directory / ref
        return str(local) if not Path(ref).is_absolute() and local.is_dir() else ref

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, per_frame: bool = False) -> VideoModel:
        """Load a saved video model. ``per_frame=True`` gives its prior alone, frame by frame (the baseline)."""
        directory = resolve_dir(name_or_path)
        config = read_config(directory)
        if config is None or config[MODEL_KEY] != cls.kind:
            raise InputError(f"{name_or_path}: not a bufferanytime {cls.kind} model (no matching config.json)")
        model = cls.from_prior(cls.prior_location(directory, config), config.get("temporal"), per_frame=per_frame)
        model.clip_len = int(config.get("clip_len", cls.default_clip_len))
        if not per_frame:
            state = load_file(str(directory / WEIGHTS_NAME))
            missing, unexpected = model.load_state_dict(state, strict=False)
            expected = set(model.trainable_state_dict())
            if unexpected or expected & set(missing):
                raise InputError(f"{name_or_path}: weights do not match the model ({len(unexpected)} unexpected)")
        return model


def as_temporal_config(temporal: TemporalConfig | dict | None) -> TemporalConfig:
    if isinstance(temporal, TemporalConfig):
        return temporal
    return TemporalConfig(**(temporal or {}))
