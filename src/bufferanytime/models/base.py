"""What the depth and the normal video models share: loading priors, and saving only what training changes.

A saved video model is a directory with

- ``config.json``: ``{"bufferanytime_model": kind, "family": FAMILY, "prior": REF, "temporal": {...}, "version":
  ...}``, where FAMILY names the prior family (:mod:`bufferanytime.families`; a config without it is of its kind's
  first family) and REF is a Hugging Face id, an absolute path, or a path relative to the directory (a copied
  prior);
- ``model.safetensors``: the trainable weights only (for depth the DPT head and temporal blocks, for normals the
  temporal blocks); the frozen rest comes from the prior. Its metadata holds a SHA-256 of the tensors
  (``content_sha256``), checked on load, so a truncated or altered file is named instead of silently used.

Every weight file read here is checked: a file that cannot be parsed, does not match its checksum, or holds NaN or
infinite values is refused with one :class:`InputError` naming the file.

Weights this package ships (``bufferanytime/weights``: the embedded models and their priors, written by other
libraries, without ``content_sha256``) carry the same tensor checksum in a ``tensors_sha256.json`` beside them: one
per loaded directory (a video model, a prior), mapping each safetensors file under it to :func:`tensors_digest`.
It is checked at load, so a flipped byte in a shipped file is named instead of silently used; a shipped directory
without one is refused. :func:`write_shipped_digests` writes them (``scripts/write_weight_checksums.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from bufferanytime import __version__
from bufferanytime.errors import InputError
from bufferanytime.io.atomic import atomic_path, write_text_atomic
from bufferanytime.models.temporal import TemporalConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PRIOR_SUBDIR = "prior"
MODEL_KEY = "bufferanytime_model"  # marks a config.json as a video model of this package
FAMILY_KEY = "family"  # the prior family of a saved video model (bufferanytime.families)
DIGEST_KEY = "content_sha256"  # safetensors metadata: SHA-256 of the tensors (names, dtypes, shapes, bytes)
CORRUPT_WEIGHTS = "cannot read model weights (truncated or corrupt file)"
DIGESTS_NAME = "tensors_sha256.json"  # {file relative to its directory: tensors_digest} of the shipped weights
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"  # the embedded models, each needs DIGESTS_NAME


def resolve_dir(name_or_path: str | Path) -> Path:
    """A local directory as is; otherwise a Hugging Face Hub id, downloaded (or found in the local cache)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise InputError(f"{path}: expected a model directory, got a file")
    if str(name_or_path).count("/") != 1 or str(name_or_path).startswith((".", "/")):
        raise InputError(
            f"{name_or_path}: no such model directory (looked for {path.absolute()}), "
            "nor a Hugging Face id like 'org/name'"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path)))
    except Exception as exc:  # offline, unknown repo, ... all mean the same to the user
        raise InputError(
            f"{name_or_path}: no such model directory (looked for {path.absolute()}), and cannot load it from the "
            f"Hugging Face Hub ({type(exc).__name__}); download it elsewhere and pass the local directory instead"
        ) from exc


def read_config(path: Path) -> dict | None:
    """The video-model config of a directory, or None when the directory is something else (e.g. a prior)."""
    file = path / CONFIG_NAME
    if not file.is_file():
        return None
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{file}: cannot read the model config (not valid JSON)") from exc
    return config if isinstance(config, dict) and MODEL_KEY in config else None


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict (names, dtypes, shapes and bytes), independent of the file layout."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def count_nonfinite(tensors: Iterable[torch.Tensor]) -> int:
    """Number of NaN or infinite values among the floating-point ``tensors``.

    A tensor's sum is finite when all its values are (a NaN or inf propagates), and summing is several times
    cheaper than testing every value, so values are counted only in tensors whose sum is not finite."""
    return sum(
        int((~torch.isfinite(t)).sum()) for t in tensors if t.is_floating_point() and not torch.isfinite(t.sum())
    )


def check_finite(tensors: Iterable[torch.Tensor], source: str | Path) -> None:
    """Refuse weights holding NaN or inf (a diverged training run): they would give NaN predictions with exit 0."""
    bad = count_nonfinite(tensors)
    if bad:
        raise InputError(f"{source}: {bad} non-finite weight value(s) (NaN or inf); the model is unusable")


def check_weight_headers(directory: Path) -> None:
    """Parse every safetensors file of ``directory``: a truncated or altered file is named here, before a library
    fails on it with a traceback."""
    for file in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise InputError(f"{file}: {CORRUPT_WEIGHTS}") from exc


def check_module_weights(module: nn.Module, directory: Path) -> None:
    """Refuse a loaded prior part with non-finite weights, naming the weight file(s) of ``directory`` holding them."""
    if not count_nonfinite(module.state_dict().values()):
        return
    for file in sorted(directory.glob("*.safetensors")):
        check_finite(read_weights(file, check=False).values(), file)
    check_finite(module.state_dict().values(), directory)


def read_weights(file: Path, check: bool = True, digest: str | None = None) -> dict[str, torch.Tensor]:
    """A safetensors file as a state dict; one InputError naming the file if it is missing, unreadable, does not
    match its stored checksum (or ``digest``, from a :data:`DIGESTS_NAME` file) or (with ``check``) holds
    non-finite values."""
    if not file.is_file():
        raise InputError(f"{file}: no such model weights file")
    try:
        with safe_open(str(file), "pt") as f:
            stored = (f.metadata() or {}).get(DIGEST_KEY)
            state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise InputError(f"{file}: {CORRUPT_WEIGHTS}") from exc
    expected = {value for value in (stored, digest) if value is not None}
    if expected and expected != {tensors_digest(state)}:
        raise InputError(f"{file}: {CORRUPT_WEIGHTS}: its content does not match its checksum")
    if check:
        check_finite(state.values(), file)
    return state


def is_shipped(directory: Path) -> bool:
    """Whether ``directory`` lies inside the package's own weights (the embedded models and their priors)."""
    return directory.resolve().is_relative_to(SHIPPED_DIR)


def read_digests(directory: Path) -> dict[str, str]:
    """The :data:`DIGESTS_NAME` of ``directory`` ({} when it has none); a shipped directory must have one."""
    file = directory / DIGESTS_NAME
    if not file.is_file():
        if is_shipped(directory):
            raise InputError(f"{file}: missing: the shipped weights of {directory} cannot be verified (reinstall "
                             "bufferanytime)")
        return {}
    try:
        digests = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{file}: cannot read the weights' checksums (not valid JSON)") from exc
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise InputError(f"{file}: cannot read the weights' checksums (expected {{file: sha256}})")
    return digests


def check_digests(directory: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Verify every file listed in ``directory``'s :data:`DIGESTS_NAME` except ``skip`` (read later with its
    digest, so not twice); returns the digests. One InputError naming the first file that is missing or altered."""
    digests = read_digests(directory)
    for name, digest in sorted(digests.items()):
        if name not in skip:
            read_weights(directory / name, check=False, digest=digest)
    return digests


def write_tensor_digests(directory: Path) -> Path:
    """Write :data:`DIGESTS_NAME` for every safetensors file under ``directory`` (not under a sub-directory that
    has its own); how the shipped weights get theirs, rerun whenever one of them changes."""
    nested = {f.parent for f in directory.rglob(DIGESTS_NAME) if f.parent != directory}
    files = [f for f in sorted(directory.rglob("*.safetensors")) if not any(f.is_relative_to(n) for n in nested)]
    digests = {f.relative_to(directory).as_posix(): tensors_digest(read_weights(f, check=False)) for f in files}
    write_text_atomic(directory / DIGESTS_NAME, json.dumps(digests, indent=2) + "\n")
    return directory / DIGESTS_NAME


class VideoModel(nn.Module):
    """Base of the video models: frozen prior parts, trainable parts named by ``trainable_prefixes``."""

    kind: str = ""
    family_name: str = ""  # its family in bufferanytime.families.FAMILIES
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
        #: How frames are resized for inference (see ``bufferanytime.inference.inference_size``); None: the
        #: prior's own preprocessing, :meth:`default_input_size`. Saved as ``input_size`` in config.json.
        self.input_size: dict | None = None
        #: What ``--precision auto`` may use for this model: None (bf16 where the device runs it fast) or "fp32"
        #: (half precision moves this model's scores too much). Saved as ``auto_precision`` in config.json.
        self.auto_precision: str | None = None
        #: Recompute the model's own largest per-frame layers in the backward pass instead of keeping what they
        #: save, where the model supports it (see ``set_gradient_checkpointing``); its temporal blocks have their
        #: own flag. Off unless a caller sets it.
        self.gradient_checkpointing = False

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

    def default_input_size(self) -> dict:
        """The prior's own inference resize: ``short_side``/``long_side`` bounds and whether it enlarges."""
        return {}

    def encode_window(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Windowed inference: the per-frame work on ``(N,3,H,W)`` frames, kept by the predictor for the overlap of
        the next window. By default ``encode_frames`` (the frozen stage); a model may do more per frame here."""
        return self.encode_frames(images)

    def decode_window(self, features: list[torch.Tensor], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
        """Windowed inference: ``encode_window`` output of B*T frames -> outputs at ``size``."""
        return self.decode_frames(features, num_frames, size)

    def configure(self, config: dict) -> None:
        """Read what a family keeps in its saved ``config.json`` beyond the shared keys (:meth:`config_dict`);
        called by :meth:`from_pretrained` after the prior is loaded and before the trained weights are."""

    # -- shared ---------------------------------------------------------------------------------------------
    @property
    def family(self):
        """The prior family (:class:`~bufferanytime.families.Family`) of this model: its export graph, training
        objective and the tasks it can produce."""
        from bufferanytime.families import get_family

        return get_family(self.family_name)

    @property
    def task(self):
        """The task (:mod:`bufferanytime.tasks`) this model's output serves: what it holds, its files, losses and
        metrics. Its kind's task by default; a depth model on a metric prior serves METRIC_DEPTH."""
        from bufferanytime.tasks import get_task

        return get_task(self.kind)

    def size_rule(self) -> dict:
        """The inference resize rule of this model: its saved ``input_size``, else its prior's default."""
        return dict(self.input_size or self.default_input_size())

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.trainable_prefixes)}

    def config_dict(self) -> dict:
        return {
            MODEL_KEY: self.kind,
            FAMILY_KEY: self.family_name,
            "prior": self.prior_ref,
            "temporal": self.temporal_config.to_dict(),
            "clip_len": self.clip_len,
            "input_size": self.size_rule(),
            **({"auto_precision": self.auto_precision} if self.auto_precision else {}),
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
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", DIGEST_KEY: tensors_digest(state)})
        write_text_atomic(directory / CONFIG_NAME, json.dumps(config, indent=2) + "\n")

    @classmethod
    def prior_location(cls, directory: Path, config: dict) -> str:
        """The prior of a saved video model: a relative ref is resolved against the model directory."""
        ref = str(config.get("prior", ""))
        local = directory / ref
        if local.is_dir():
            return str(local)
        if Path(ref).is_absolute() or ref.count("/") != 1 or ref.startswith("."):  # a path, not a Hugging Face id
            raise InputError(
                f"{local.absolute()}: no such prior directory (prior {ref!r} of {directory / CONFIG_NAME}, "
                f"resolved against {directory.absolute()})"
            )
        return ref

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, per_frame: bool = False) -> VideoModel:
        """Load a saved video model. ``per_frame=True`` gives its prior alone, frame by frame (the baseline)."""
        directory = resolve_dir(name_or_path)
        config = read_config(directory)
        family = None if config is None else config.get(FAMILY_KEY, cls.family_name)
        if config is None or config[MODEL_KEY] != cls.kind or family != cls.family_name:
            raise InputError(f"{name_or_path}: not a bufferanytime {cls.kind} model of the {cls.family_name} family "
                             "(no matching config.json)")
        prior = cls.prior_location(directory, config)
        digests = check_digests(directory, skip=(WEIGHTS_NAME,))
        if Path(prior).is_dir():
            check_digests(Path(prior))
        try:
            model = cls.from_prior(prior, config.get("temporal"), per_frame=per_frame)
        except InputError as exc:
            if Path(prior).is_dir():
                raise
            raise InputError(f"{exc} (the prior of {directory / CONFIG_NAME}; not in {directory.absolute()} "
                             "either)") from exc
        model.clip_len = int(config.get("clip_len", cls.default_clip_len))
        model.input_size = config.get("input_size")
        model.auto_precision = config.get("auto_precision")
        model.configure(config)
        if not per_frame:
            state = read_weights(directory / WEIGHTS_NAME, digest=digests.get(WEIGHTS_NAME))
            missing, unexpected = model.load_state_dict(state, strict=False)
            expected = set(model.trainable_state_dict())
            if unexpected or expected & set(missing):
                raise InputError(f"{name_or_path}: weights do not match the model ({len(unexpected)} unexpected)")
        return model


def stack_chunks(chunks: Iterable[torch.Tensor], frames: int) -> torch.Tensor:
    """Chunks of consecutive frames (first dim) written one by one into one tensor of ``frames`` frames, laid out
    like the first chunk (channels-last stays channels-last): ``torch.cat`` of the same values, but with the chunks
    produced lazily only one is alive besides the result, so a window's maps are never held twice."""
    window, start = None, 0
    for chunk in chunks:
        if window is None:
            window = window_like(chunk, frames)
        window[start : start + len(chunk)] = chunk
        start += len(chunk)
    if window is None or start != frames:
        raise ValueError(f"chunks hold {start} frames, expected {frames}")
    return window


def window_like(part: torch.Tensor, frames: int) -> torch.Tensor:
    """An uninitialised tensor of ``frames`` frames with ``part``'s other dims, dtype, device and memory format."""
    channels_last = part.dim() == 4 and part.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if channels_last and not part.is_contiguous() else torch.contiguous_format
    return torch.empty((frames, *part.shape[1:]), dtype=part.dtype, device=part.device, memory_format=layout)


def nearest_multiple(size: int, multiple: int) -> int:
    """The multiple of ``multiple`` nearest to ``size`` (at least ``multiple``): the side a model resizes to."""
    return max(multiple, int(round(size / multiple)) * multiple)


def as_temporal_config(temporal: TemporalConfig | dict | None) -> TemporalConfig:
    if isinstance(temporal, TemporalConfig):
        return temporal
    return TemporalConfig(**(temporal or {}))


def write_shipped_digests(root: Path = SHIPPED_DIR) -> list[Path]:
    """(Re)write the :data:`DIGESTS_NAME` of every video model under ``root`` and of its prior when that lies under
    ``root`` too (priors first, so a model's file does not list its prior's)."""
    models = sorted(f.parent for f in root.rglob(CONFIG_NAME) if read_config(f.parent) is not None)
    priors = {Path(VideoModel.prior_location(m, read_config(m))).resolve() for m in models}
    priors = {p for p in priors if p.is_dir() and p.is_relative_to(root.resolve())}
    return [write_tensor_digests(d) for d in [*sorted(priors), *models]]


class TransformersVideoModel(VideoModel):
    """A video model around a transformers depth model (``prior_class``, e.g. ``DPTForDepthEstimation``) whose
    backbone stays frozen: how its prior is loaded, checked and copied is the same for every such family."""

    prior_class: type  # the transformers model class of the prior

    @classmethod
    def from_prior(
        cls, name_or_path: str | Path, temporal: TemporalConfig | dict | None = None, per_frame: bool = False
    ) -> TransformersVideoModel:
        """Build the video model around a checkpoint of ``prior_class``: a Hub id or a local directory."""
        directory = resolve_dir(name_or_path)
        check_weight_headers(directory)
        prior = cls.prior_class.from_pretrained(str(directory))
        check_module_weights(prior, directory)
        ref = str(directory.resolve()) if Path(name_or_path).is_dir() else str(name_or_path)
        return cls(prior, ref, temporal, per_frame)

    @classmethod
    def copy_prior(cls, prior_ref: str, destination: Path) -> None:
        cls.prior_class.from_pretrained(str(resolve_dir(prior_ref))).save_pretrained(destination)

    def train(self, mode: bool = True) -> TransformersVideoModel:
        super().train(mode)
        self.backbone.eval()  # frozen: dropout and friends stay off
        return self

    def encode_frames(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The frozen per-frame stage: ``(N,3,H,W)`` in [0,1] -> the backbone's features, each with N leading
        (``preprocess`` and ``backbone_features`` are the family's)."""
        return self.backbone_features(self.preprocess(images))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames (B,T,3,H,W)`` in [0,1] -> ``(B,T,H,W)``: every frame encoded, then decoded as one window of T
        (``decode_frames`` is the family's)."""
        b, t, _, h, w = frames.shape
        features = self.encode_frames(frames.reshape(b * t, 3, h, w))
        return self.decode_frames(features, t, (h, w)).reshape(b, t, h, w)
