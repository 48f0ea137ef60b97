"""The Marigold-E2E-FT normals family: the video normal model, its export graph and its tiny test prior.

Video model: Marigold-E2E-FT with temporal blocks after the stages of its U-Net. Training objective:
:class:`~bufferanytime.training.objectives.NormalObjective` (the regularization in latent space, the stabilization on
the decoded normals through deferred back-propagation).

The prior is a Marigold-E2E-FT normals checkpoint (Garcia et al., *Fine-Tuning Image-Conditional Diffusion Models
is Easier than You Think*; Hub id ``GonzaloMG/marigold-e2e-ft-normals``) in the directory layout diffusers uses
for ``MarigoldNormalsPipeline``: ``model_index.json``, ``unet/``, ``vae/``, ``scheduler/`` and, only to compute the
empty-prompt embedding once, ``text_encoder/`` + ``tokenizer/``. Copies written by this package store that
embedding instead (``empty_prompt_embedding.safetensors``), so inference needs no text encoder.

Prediction is single-step, exactly as the reference inference code does it (``Marigold/marigold/
marigold_pipeline.py`` of github.com/VisualComputingInstitute/diffusion-e2e-ft with ``noise="zeros"`` and one
denoising step, and diffusers' ``MarigoldNormalsPipeline`` with ``latents=0`` and ``num_inference_steps=1``):

1. RGB in [-1, 1] -> VAE encoder -> the MEAN of the latent distribution, times ``vae.config.scaling_factor``;
2. concatenated with a zero latent (8 channels), through the U-Net at the single timestep of a ``DDIMScheduler``
   with ``timestep_spacing="trailing"`` (t = 999 for 1000 training steps), conditioned on the empty prompt;
3. one DDIM step from the zero latent gives the normal latent (the checkpoint predicts v: ``v_prediction``);
4. latent / scaling factor -> VAE decoder -> 3 channels, clipped to [-1, 1], normalised to unit length.

Channel convention: the E2E-FT normals follow DSINE's (x left, y up, z towards the camera for the outward normal,
see ``MARIGOLD_E2E_FT_AXES`` in ``bufferanytime.constants``), so :func:`to_camera_axes` flips x, in this one
place, to give ours (x right, y up, z towards the camera). The prs-eth Marigold normals checkpoints already use
our convention (diffusers' Marigold docs); they are not the prior of the paper and are not special-cased.

The U-Net and the VAE are frozen. Zero-initialised :class:`TemporalBlock` s enter diffusers' own
``UNet2DConditionModel.forward`` through forward hooks (:func:`temporal_hooks`), so a fresh video model is
exactly its prior and no library code is copied. Where they sit is ``TemporalConfig.layout``:

- ``"stage"`` (default, the embedded model): one block after every down block, the mid block and every up block
  (Fig. 4b of the paper): 9 blocks on Stable Diffusion 2's U-Net (4 down, 1 mid, 4 up).
- ``"layer"``: one block after every resnet/attention pair, where AnimateDiff's ``UNetMotion`` (which the paper
  adapts) puts its motion modules: 21 blocks on SD2 (8 down, 1 mid, 12 up).

The paper's layout is ``"layer"``; the embedded model uses ``"stage"``, trained before the difference was noticed,
and retraining it takes hours of CPU. ``benchmarks/motion_layout.py`` measures the cost of each (parameters,
time per frame). diffusers' ``UNetMotionModel`` / ``MotionAdapter`` cannot serve directly: they are built for
AnimateDiff's SD1.5 motion adapters (their own motion-module class and state-dict keys, inserted at conversion
from a ``UNet2DConditionModel`` with an adapter of matching block widths), carry no zero-initialised residual
output in our :class:`TemporalBlock` format, and would change the keys of the embedded weights.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, MarigoldNormalsPipeline, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import save_file
from torch import nn

from bufferanytime.constants import (
    CLIP_LEN_NORMAL,
    DEFERRED_CHUNK,
    MARIGOLD_E2E_FT_AXES,
    MARIGOLD_NORMALS_EPS,
)
from bufferanytime.errors import InputError
from bufferanytime.families.base import Family
from bufferanytime.io.atomic import atomic_path
from bufferanytime.models.base import (
    PRIOR_SUBDIR,
    VideoModel,
    as_temporal_config,
    check_module_weights,
    check_weight_headers,
    nearest_multiple,
    read_weights,
    resolve_dir,
)
from bufferanytime.models.temporal import TemporalBlock, TemporalConfig, temporal_hooks
from bufferanytime.tasks import NORMAL

PRIOR_ID = "GonzaloMG/marigold-e2e-ft-normals"
MODEL_INDEX_NAME = "model_index.json"
MARIGOLD_PROCESSING_RESOLUTION = 768  # Marigold's default processing resolution (long side)
EMBEDDING_NAME = "empty_prompt_embedding.safetensors"
EMBEDDING_KEY = "embedding"
REQUIRED_SUBDIRS = ("unet", "vae", "scheduler")
TEMPORAL_LAYOUTS = ("stage", "layer")  # see the module docstring


def to_camera_axes(normals: torch.Tensor) -> torch.Tensor:
    """Prior normals ``(N, 3, H, W)`` -> our camera axes (x right, y up, z towards the camera)."""
    signs = torch.tensor(MARIGOLD_E2E_FT_AXES, device=normals.device, dtype=normals.dtype)
    return normals * signs.view(1, 3, 1, 1)


def compute_empty_prompt_embedding(directory: Path) -> torch.Tensor:
    """CLIP text embedding ``(1, L, D)`` of the empty prompt, from ``text_encoder/`` and ``tokenizer/``.

    Tokenised without padding (BOS, EOS), as both reference inference codes do (diffusion-e2e-ft
    ``MarigoldPipeline.encode_empty_text``, diffusers ``MarigoldNormalsPipeline.__call__``).
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(directory), subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(str(directory), subfolder="text_encoder").eval()
    ids = tokenizer(
        "", padding="do_not_pad", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return text_encoder(ids)[0].float().contiguous()


def load_empty_prompt_embedding(directory: Path) -> torch.Tensor:
    """The stored empty-prompt embedding of a prior directory, or computed once from its text encoder."""
    stored = directory / EMBEDDING_NAME
    if stored.is_file():
        state = read_weights(stored)
        if EMBEDDING_KEY not in state:
            raise InputError(f"{stored}: no {EMBEDDING_KEY!r} tensor")
        return state[EMBEDDING_KEY].float()
    if (directory / "text_encoder").is_dir() and (directory / "tokenizer").is_dir():
        return compute_empty_prompt_embedding(directory)
    raise InputError(f"{directory}: no {EMBEDDING_NAME} and no text_encoder/ + tokenizer/ to compute it")


def write_marigold_prior(
    directory: Path,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    scheduler: DDIMScheduler,
    embedding: torch.Tensor | None,
    use_full_z_range: bool = True,
    processing_resolution: int | None = None,
    text_encoder: nn.Module | None = None,
    tokenizer=None,
) -> None:
    """Write a prior in the ``MarigoldNormalsPipeline`` layout, plus the empty-prompt embedding if given."""
    directory = Path(directory)
    pipeline = MarigoldNormalsPipeline(
        unet=unet,
        vae=vae,
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        prediction_type="normals",
        use_full_z_range=use_full_z_range,
        default_denoising_steps=1,
        default_processing_resolution=processing_resolution,
    )
    save_pipeline(pipeline, directory, embedding)


def save_pipeline(pipeline, directory: Path, embedding: torch.Tensor | None) -> None:
    """Save a Marigold pipeline's folder (quietly: a missing text encoder is intended) and, if given, the
    empty-prompt embedding beside it."""
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # a missing text encoder is intended, not worth a warning
    try:
        pipeline.save_pretrained(str(directory))
    finally:
        diffusers_logging.set_verbosity(verbosity)
    if embedding is not None:
        save_file({EMBEDDING_KEY: embedding.detach().cpu().float().contiguous()}, str(directory / EMBEDDING_NAME))


class VideoNormalModel(VideoModel):
    """``forward(frames (B,T,3,H,W) in [0,1]) -> unit normals (B,T,3,H,W)`` in our camera convention.

    Frames are resized inside to the nearest multiple of the VAE and U-Net downsampling factors (64 for Stable
    Diffusion 2) and the normals resized back to ``(H, W)`` and renormalised. The stages are exposed for training:
    :meth:`encode_latents` (frozen, no gradient), :meth:`predict_latents` (U-Net + temporal blocks,
    differentiable) and :meth:`decode_latents` (differentiable, one chunk of frames). ``decode_chunk`` frames go
    through the VAE at once. With ``per_frame=True`` the temporal blocks are skipped: for a fresh model, the prior
    frame by frame.
    """

    kind = NORMAL.kind
    family_name = "marigold-e2e-normals"
    trainable_prefixes = ("temporal.",)
    default_clip_len = CLIP_LEN_NORMAL

    def default_input_size(self) -> dict:
        """Marigold's processing: the long side resized to its processing resolution (default 768), up or down."""
        return {"long_side": self.processing_resolution or MARIGOLD_PROCESSING_RESOLUTION, "upscale": True}

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler: DDIMScheduler,
        empty_prompt_embedding: torch.Tensor,
        prior_ref: str = "",
        temporal: TemporalConfig | dict | None = None,
        per_frame: bool = False,
        use_full_z_range: bool = True,
        processing_resolution: int | None = None,
    ):
        super().__init__(prior_ref, as_temporal_config(temporal), per_frame)
        _check_unet(unet)
        self.unet = unet.requires_grad_(False).eval()
        self.vae = vae.requires_grad_(False).eval()
        self.scheduler = scheduler
        self.scheduler.set_timesteps(1)
        self.timestep = int(self.scheduler.timesteps[0])
        self.use_full_z_range = use_full_z_range
        #: The prior's recommended processing resolution (longer side), if its model_index.json names one.
        self.processing_resolution = processing_resolution
        self.decode_chunk = DEFERRED_CHUNK
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.size_multiple = self.vae_scale * 2**unet.num_upsamplers
        self.register_buffer("empty_prompt_embedding", empty_prompt_embedding.float(), persistent=False)
        self.temporal, self._temporal_sites = _temporal_layout(unet, self.temporal_config)

    @classmethod
    def from_prior(
        cls, name_or_path: str | Path, temporal: TemporalConfig | dict | None = None, per_frame: bool = False
    ) -> VideoNormalModel:
        """Build the video model around a Marigold-E2E-FT normals checkpoint: a Hub id or a local directory."""
        directory = resolve_dir(name_or_path)
        missing = [name for name in REQUIRED_SUBDIRS if not (directory / name).is_dir()]
        if missing:
            raise InputError(f"{name_or_path}: not a Marigold normals directory (missing {', '.join(missing)}/)")
        index_file = directory / MODEL_INDEX_NAME
        index = json.loads(index_file.read_text()) if index_file.is_file() else {}
        for part in ("unet", "vae"):
            check_weight_headers(directory / part)
        unet = UNet2DConditionModel.from_pretrained(str(directory), subfolder="unet")
        vae = AutoencoderKL.from_pretrained(str(directory), subfolder="vae")
        check_module_weights(unet, directory / "unet")
        check_module_weights(vae, directory / "vae")
        # Trailing spacing makes the single step start at the last training timestep (the E2E-FT inference setting).
        scheduler = DDIMScheduler.from_pretrained(str(directory), subfolder="scheduler", timestep_spacing="trailing")
        embedding = load_empty_prompt_embedding(directory)
        ref = str(directory.resolve()) if Path(name_or_path).is_dir() else str(name_or_path)
        return cls(
            unet,
            vae,
            scheduler,
            embedding,
            ref,
            temporal,
            per_frame,
            use_full_z_range=bool(index.get("use_full_z_range", True)),
            processing_resolution=index.get("default_processing_resolution"),
        )

    @classmethod
    def copy_prior(cls, prior_ref: str, destination: Path) -> None:
        """Write the prior in the Marigold layout with the stored empty-prompt embedding (no text encoder)."""
        cls.from_prior(prior_ref, per_frame=True).save_prior(destination)

    def save_pretrained(self, directory: str | Path, copy_prior: bool = False) -> None:
        """As :meth:`VideoModel.save_pretrained`; a copied prior is written from the frozen parts in memory (they
        are the prior's, unchanged), so the U-Net is not loaded a second time."""
        prior_dir = Path(directory) / PRIOR_SUBDIR
        if copy_prior and not prior_dir.exists():
            with atomic_path(prior_dir) as tmp:
                self.save_prior(tmp)
        super().save_pretrained(directory, copy_prior=copy_prior)

    def save_prior(self, destination: str | Path) -> None:
        """Write this model's prior (U-Net, VAE, scheduler, empty-prompt embedding) as a Marigold directory."""
        write_marigold_prior(
            Path(destination),
            self.unet,
            self.vae,
            self.scheduler,
            self.empty_prompt_embedding,
            use_full_z_range=self.use_full_z_range,
            processing_resolution=self.processing_resolution,
        )

    def train(self, mode: bool = True) -> VideoNormalModel:
        super().train(mode)
        self.unet.eval()  # frozen: dropout and friends stay off
        self.vae.eval()
        return self

    # -- stages, exposed for training ------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(N,3,H,W)`` in [0,1] -> [-1,1] with sides that are multiples of ``size_multiple``."""
        multiple = self.size_multiple
        size = (nearest_multiple(images.shape[-2], multiple), nearest_multiple(images.shape[-1], multiple))
        if size != tuple(images.shape[-2:]):
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return images * 2.0 - 1.0

    @torch.no_grad()
    def encode_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(B,T,3,H,W)`` in [0,1] -> RGB latents ``(B,T,4,h,w)`` (frozen VAE, ``decode_chunk`` at once)."""
        b, t = frames.shape[:2]
        images = self.preprocess(frames.flatten(0, 1).to(self.vae.dtype))
        latents = torch.cat([self.vae.encode(chunk).latent_dist.mode() for chunk in images.split(self.decode_chunk)])
        return (latents * self.vae.config.scaling_factor).unflatten(0, (b, t)).contiguous()

    def predict_latents(self, rgb_latents: torch.Tensor, per_frame: bool | None = None) -> torch.Tensor:
        """RGB latents ``(B,T,4,h,w)`` -> normal latents ``(B,T,4,h,w)``, differentiable w.r.t. the temporal blocks.

        ``per_frame`` overrides the model's setting for this call: ``True`` gives the prior's latents (the target
        of the regularisation loss, Eq. 2) without a second copy of the U-Net.
        """
        per_frame = self.per_frame if per_frame is None else per_frame
        b, t = rgb_latents.shape[:2]
        rgb = rgb_latents.flatten(0, 1)
        noise = torch.zeros_like(rgb)
        model_output = self._unet(torch.cat([rgb, noise], dim=1), t, per_frame)
        latents = self.scheduler.step(model_output, self.timestep, noise).prev_sample
        return latents.unflatten(0, (b, t))

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normal latents ``(N,4,h,w)`` -> unit normals ``(N,3,8h,8w)`` in our camera convention (differentiable)."""
        images = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        images = images.clamp(-1.0, 1.0)
        if not self.use_full_z_range:  # checkpoints trained on z in [0, 1] only (diffusers' decode_prediction)
            images = torch.cat([images[:, :2], images[:, 2:] * 0.5 + 0.5], dim=1)
        return to_camera_axes(F.normalize(images, dim=1, eps=MARIGOLD_NORMALS_EPS))

    def encode_frames(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The frozen per-frame stage: ``(N,3,H,W)`` in [0,1] -> ``[rgb latents (N,4,h,w)]``."""
        return [self.encode_latents(images[None])[0]]

    def decode_frames(self, features: list[torch.Tensor], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
        """The temporal stage on ``encode_frames`` output of B*T frames -> unit normals ``(B*T, 3, H, W)``."""
        rgb_latents = features[0].unflatten(0, (-1, num_frames))
        latents = self.predict_latents(rgb_latents).flatten(0, 1)
        normals = torch.cat([self.decode_latents(chunk) for chunk in latents.split(self.decode_chunk)])
        if normals.shape[-2:] != tuple(size):
            normals = F.interpolate(normals, size=tuple(size), mode="bilinear", align_corners=False)
            normals = F.normalize(normals, dim=1, eps=MARIGOLD_NORMALS_EPS)
        return normals

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = frames.shape
        return self.decode_frames(self.encode_frames(frames.flatten(0, 1)), t, (h, w)).unflatten(0, (b, t))

    # -- the U-Net with temporal blocks ------------------------------------------------------------------------
    def _unet(self, sample: torch.Tensor, num_frames: int, per_frame: bool) -> torch.Tensor:
        """diffusers' ``UNet2DConditionModel.forward`` on the empty prompt at the single timestep, with the
        temporal blocks hooked in (none when ``per_frame``)."""
        context = self.empty_prompt_embedding.to(sample.dtype).repeat(sample.shape[0], 1, 1)  # as diffusers does
        with temporal_hooks([] if per_frame else self._temporal_sites, num_frames):
            return self.unet(sample, self.timestep, encoder_hidden_states=context, return_dict=False)[0]


def _stage_sites(stage: nn.Module, layout: str) -> list[nn.Module]:
    """The modules of a U-Net stage that a temporal block follows: the stage itself ("stage"), or each of its
    attentions (each resnet where it has none) in the "layer" layout, as AnimateDiff's motion modules."""
    if layout == "stage":
        return [stage]
    attentions = getattr(stage, "attentions", None)
    return list(attentions) if attentions else list(stage.resnets)


def _site_channels(site: nn.Module) -> int:
    """Channels of a site's output: a stage's last resnet, an attention's output projection, or a resnet."""
    if hasattr(site, "resnets"):
        return site.resnets[-1].out_channels
    if hasattr(site, "proj_out"):
        return site.proj_out.out_features if isinstance(site.proj_out, nn.Linear) else site.proj_out.out_channels
    return site.out_channels


def _temporal_layout(
    unet: UNet2DConditionModel, config: TemporalConfig
) -> tuple[nn.ModuleDict, list[tuple[nn.Module, TemporalBlock]]]:
    """The temporal blocks of ``config.layout`` (keys ``down.i``, ``mid``, ``up.i``; one level deeper, per layer,
    in the "layer" layout) and the (U-Net module, block) pairs they follow."""
    if config.layout not in TEMPORAL_LAYOUTS:
        raise ValueError(f"unknown temporal layout {config.layout!r}; expected one of {TEMPORAL_LAYOUTS}")
    stages = {"down": list(unet.down_blocks), "up": list(unet.up_blocks)}
    if unet.mid_block is not None:
        stages["mid"] = [unet.mid_block]
    blocks, sites = {}, []
    for name, modules in stages.items():
        per_stage = []
        for stage in modules:
            pairs = [(site, TemporalBlock(_site_channels(site), config)) for site in _stage_sites(stage, config.layout)]
            sites += pairs
            blocks_here = [block for _, block in pairs]
            per_stage.append(blocks_here[0] if config.layout == "stage" else nn.ModuleList(blocks_here))
        blocks[name] = per_stage[0] if name == "mid" else nn.ModuleList(per_stage)
    return nn.ModuleDict(blocks), sites


def _check_unet(unet: UNet2DConditionModel) -> None:
    """Only the conditioning Marigold uses is passed to the U-Net (timestep, empty prompt); refuse a U-Net that
    needs more (class or added embeddings, a centred input) or whose input is not RGB latents + noise latents."""
    config = unet.config
    unsupported = {
        "class_embed_type": config.class_embed_type,
        "addition_embed_type": config.addition_embed_type,
        "encoder_hid_dim_type": config.encoder_hid_dim_type,
        "center_input_sample": config.center_input_sample or None,
    }
    used = [name for name, value in unsupported.items() if value is not None]
    if used or config.in_channels != 2 * config.out_channels:
        raise ValueError(f"unsupported Marigold U-Net (in_channels={config.in_channels}, options {used})")


class NormalGraph(nn.Module):
    """Export graph: ``frames (B,T,3,H,W)`` in [0,1] -> unit normals ``(B,T,3,H,W)``: VAE encoder, U-Net step (the
    temporal blocks hooked in), VAE decoder."""

    def __init__(self, model: VideoNormalModel):
        super().__init__()
        self.model = model

    @staticmethod
    def multiple(model: VideoNormalModel) -> int:
        """Input sides must be multiples of the VAE and U-Net downsampling."""
        return model.size_multiple

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        m = self.model
        latents = m.predict_latents(m.encode_latents(frames))
        return m.decode_latents(latents.flatten(0, 1)).unflatten(0, frames.shape[:2])


# -- tiny random priors in the exact on-disk format (tests; the embedded prior's architecture) -----------------------

def tiny_normal_components(seed: int = 0) -> dict:
    """Tiny random instances of the real classes, in the Marigold-E2E-FT (Stable Diffusion 2) configuration."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=8,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 32, 32),  # four levels: downsampling by 8, like Stable Diffusion's VAE
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    # Random decoders give near-zero vectors at some pixels, where normalising amplifies rounding noise; like a
    # real normals model, lean the output towards the camera (z) so every pixel has a well-defined direction.
    with torch.no_grad():
        vae.decoder.conv_out.bias[2] += 1.0
    scheduler = sd2_scheduler()
    # The empty prompt tokenises to BOS + EOS: two tokens of cross_attention_dim features.
    embedding = torch.randn(1, 2, unet.config.cross_attention_dim)
    return {"unet": unet, "vae": vae, "scheduler": scheduler, "embedding": embedding}


def sd2_scheduler():
    """Stable Diffusion 2's scheduler config (v-prediction), with the trailing spacing of E2E-FT inference."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )


def normal_prior_components(seed: int = 0) -> dict:
    """The embedded normal prior's architecture (``train-prior normal``): the Marigold classes, scaled down.

    A 3-level VAE (downsampling by 4, so that a small decoder keeps detail) and a 2-level U-Net with
    cross-attention on the stored empty-prompt embedding, v-prediction DDIM scheduler with trailing spacing.
    """
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=8, sample_size=128,
    )
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=8, out_channels=4, block_out_channels=(48, 96), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=48, attention_head_dim=(4, 8), use_linear_projection=True, norm_num_groups=16,
    )
    embedding = torch.randn(1, 2, unet.config.cross_attention_dim) * 0.5
    return {"vae": vae, "unet": unet, "scheduler": sd2_scheduler(), "embedding": embedding}


def _tiny_text_encoder(hidden_size: int, work_dir: Path):
    """A tiny CLIP tokenizer (BOS/EOS/pad and one word) and text encoder of width ``hidden_size``."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2, "a</w>": 3}
    (work_dir / "vocab.json").write_text(json.dumps(vocab))
    (work_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        vocab_file=str(work_dir / "vocab.json"),
        merges_file=str(work_dir / "merges.txt"),
        pad_token="!",
        model_max_length=77,
    )
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    return tokenizer, CLIPTextModel(config).eval()


def tiny_marigold_components(seed: int = 0) -> dict:
    """The smallest Marigold of the real classes, for the conformance suite: the tiny VAE of
    :func:`tiny_normal_components` (Stable Diffusion's
    four levels, downsampling by 8) and a one-level U-Net whose one attention is its cross-attention mid block (on
    the empty-prompt embedding), v-prediction DDIM with trailing spacing.

    One level instead of two leaves 3 temporal blocks instead of 5 and 1 transformer instead of 4: the ONNX graph,
    whose tracing and optimisation dominate the suite's time, has about a third fewer nodes, while every kind of site
    (down, mid, up), the skip connections and the prompt conditioning are still there.
    """
    parts = tiny_normal_components(seed)  # the VAE and the embedding's width; the U-Net is replaced
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=8, out_channels=4, block_out_channels=(32,), layers_per_block=1,
        down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), cross_attention_dim=32,
        attention_head_dim=4, use_linear_projection=True,
    )
    return {**parts, "unet": unet, "scheduler": sd2_scheduler()}


def make_tiny_normal_prior(path: str | Path, seed: int = 0, text_encoder: bool = False) -> Path:
    """Write a tiny random Marigold-layout normals prior to ``path`` and return the path.

    By default the empty-prompt embedding is stored (``empty_prompt_embedding.safetensors``) and there is no text
    encoder; ``text_encoder=True`` writes a tiny ``text_encoder/`` + ``tokenizer/`` instead, like a real checkpoint.
    """
    path = Path(path)
    parts = tiny_normal_components(seed)
    if not text_encoder:
        write_marigold_prior(path, parts["unet"], parts["vae"], parts["scheduler"], parts["embedding"])
        return path
    with tempfile.TemporaryDirectory() as work_dir:
        tokenizer, encoder = _tiny_text_encoder(parts["unet"].config.cross_attention_dim, Path(work_dir))
        write_marigold_prior(
            path, parts["unet"], parts["vae"], parts["scheduler"], None, text_encoder=encoder, tokenizer=tokenizer
        )
    return path


def make_small_normal_prior(path: str | Path, seed: int = 0) -> Path:
    """The family's test prior (``FAMILY.tiny_prior``, which the conformance suite runs): the one-level U-Net of
    :func:`tiny_marigold_components` in the E2E-FT layout. The tests of the embedded normal model's own
    architecture (two levels, as :func:`tiny_normal_components`) use :func:`make_tiny_normal_prior`."""
    path = Path(path)
    parts = tiny_marigold_components(seed)
    write_marigold_prior(path, parts["unet"], parts["vae"], parts["scheduler"], parts["embedding"])
    return path


FAMILY = Family(
    name=VideoNormalModel.family_name,
    title="Marigold-E2E-FT normals",
    model_class=VideoNormalModel,
    tasks=(NORMAL,),
    objective="bufferanytime.training.objectives:NormalObjective",
    graph=NormalGraph,
    tiny_prior=lambda path, seed: make_small_normal_prior(path, seed),
    prior_trainers={NORMAL.name: "bufferanytime.training.prior:train_normal_prior"},
    source=f"diffusers MarigoldNormalsPipeline layout, single step from zero noise ({PRIOR_ID})",
)
