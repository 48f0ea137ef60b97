"""Tileable textures for the synthetic renderer: procedural patterns and crops of real photos.

Every texture is a square float32 RGB image in [0, 1] that tiles seamlessly (it is periodic), stored
as a mip pyramid so that distant or grazing surfaces are filtered instead of aliased. Surfaces look
textures up by coordinates in metres on the surface, so appearance moves exactly with the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bufferanytime.errors import InputError
from bufferanytime.io.images import read_rgb

TEXTURE_SIZE = 256  # texels per side of every texture (a power of two, so the pyramid tiles exactly)
MIN_MIP_SIZE = 1  # coarsest pyramid level, texels per side (the mean colour)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
PATTERNS = ("checker", "stripes", "noise", "marble", "bricks", "gradient")


@dataclass
class Texture:
    """A tileable texture pyramid; ``levels[0]`` is ``(S, S, 3)`` float32, each next level half the size."""

    levels: list[np.ndarray]
    period: float  # metres covered by one tile of the texture on a surface

    @property
    def size(self) -> int:
        return self.levels[0].shape[0]


def build_pyramid(image: np.ndarray) -> list[np.ndarray]:
    """Halve a periodic square image down to ``MIN_MIP_SIZE`` by 2x2 averaging (keeps it periodic)."""
    levels = [np.ascontiguousarray(image, dtype=np.float32)]
    while levels[-1].shape[0] > MIN_MIP_SIZE:
        im = levels[-1]
        levels.append(0.25 * (im[0::2, 0::2] + im[1::2, 0::2] + im[0::2, 1::2] + im[1::2, 1::2]))
    return levels


def _bilinear_wrap(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup with periodic wrap; ``x``, ``y`` in texels with texel centres at +0.5."""
    size = image.shape[0]
    x = x - 0.5
    y = y - 0.5
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0)[:, None].astype(np.float32)
    fy = (y - y0)[:, None].astype(np.float32)
    x0 = x0.astype(np.int64) % size
    y0 = y0.astype(np.int64) % size
    x1 = (x0 + 1) % size
    y1 = (y0 + 1) % size
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def sample_texture(texture: Texture, u: np.ndarray, v: np.ndarray, lod: np.ndarray) -> np.ndarray:
    """Trilinear (mip-mapped) lookup at surface coordinates ``u``, ``v`` in metres.

    ``lod`` is the mip level per point (0 = full resolution, clamped to the pyramid); returns ``(N, 3)``.
    """
    out = np.empty((u.shape[0], 3), np.float32)
    if u.shape[0] == 0:
        return out
    top = len(texture.levels) - 1
    lod = np.clip(lod, 0.0, top)
    base = np.minimum(np.floor(lod).astype(np.int64), top)
    frac = (lod - base).astype(np.float32)[:, None]
    tiles_u = u / texture.period
    tiles_v = v / texture.period
    for level in np.unique(base):
        idx = np.nonzero(base == level)[0]
        fine = texture.levels[level]
        coarse = texture.levels[min(level + 1, top)]
        a = _bilinear_wrap(fine, tiles_u[idx] * fine.shape[0], tiles_v[idx] * fine.shape[0])
        b = _bilinear_wrap(coarse, tiles_u[idx] * coarse.shape[0], tiles_v[idx] * coarse.shape[0])
        out[idx] = a + (b - a) * frac[idx]
    return out


# --- procedural patterns ------------------------------------------------------------------------------------


def random_color(rng: np.random.Generator, saturation: tuple[float, float] = (0.05, 0.6)) -> np.ndarray:
    """A random RGB colour in [0, 1] with moderate saturation and value."""
    hsv = np.array(
        [[[rng.uniform(0, 180), rng.uniform(*saturation) ** 1.5 * 255, rng.uniform(0.3, 0.95) * 255]]], np.float32
    )
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def periodic_noise(rng: np.random.Generator, size: int, beta: float, min_wavelength: float) -> np.ndarray:
    """Periodic fractal noise in [0, 1]: white noise filtered by ``1/f^beta`` in the Fourier domain.

    Frequencies with a wavelength below ``min_wavelength`` texels are removed so the texture stays smooth.
    """
    white = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    gain = f ** (-beta) * (f < 1.0 / min_wavelength)
    gain[0, 0] = 0.0
    noise = np.fft.irfft2(np.fft.rfft2(white) * gain, s=(size, size))
    noise = (noise - noise.min()) / max(noise.max() - noise.min(), 1e-12)
    return noise.astype(np.float32)


def _ramp(t: np.ndarray, colors: list[np.ndarray]) -> np.ndarray:
    """Map ``t`` in [0, 1] through a piecewise-linear ramp of colours."""
    stops = np.linspace(0.0, 1.0, len(colors))
    channels = [np.interp(t, stops, [c[i] for c in colors]) for i in range(3)]
    return np.stack(channels, -1).astype(np.float32)


def _soft_step(x: np.ndarray, width: float) -> np.ndarray:
    """A smooth 0-to-1 step of the given width (texels), to keep pattern edges anti-aliased."""
    return np.clip(0.5 + x / width, 0.0, 1.0)


def procedural_texture(rng: np.random.Generator, pattern: str | None = None, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A random tileable pattern ``(size, size, 3)`` in [0, 1]: checker, stripes, noise, marble, bricks, gradient."""
    pattern = pattern or PATTERNS[rng.integers(len(PATTERNS))]
    c1, c2, c3 = random_color(rng), random_color(rng), random_color(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    grain = periodic_noise(rng, size, beta=1.0, min_wavelength=4.0)[..., None] - 0.5
    if pattern == "checker":
        n = int(rng.choice([2, 4, 8]))
        cell = size / n
        sx = np.sin(np.pi * xx / cell)
        sy = np.sin(np.pi * yy / cell)
        t = _soft_step(sx * sy, 0.15)
        img = _ramp(t, [c1, c2])
    elif pattern == "stripes":
        kx, ky = int(rng.integers(0, 5)), int(rng.integers(1, 7))
        if rng.random() < 0.5:
            kx, ky = ky, kx
        phase = 2 * np.pi * (kx * xx + ky * yy) / size
        wave = np.sin(phase)
        t = _soft_step(wave, 0.3) if rng.random() < 0.5 else 0.5 + 0.5 * wave
        img = _ramp(t, [c1, c2])
    elif pattern == "noise":
        t = periodic_noise(rng, size, beta=rng.uniform(1.0, 2.0), min_wavelength=3.0)
        img = _ramp(t, [c1, c2, c3])
    elif pattern == "marble":
        turb = periodic_noise(rng, size, beta=1.5, min_wavelength=3.0)
        k = int(rng.integers(1, 5))
        t = 0.5 + 0.5 * np.sin(2 * np.pi * k * xx / size + rng.uniform(4, 10) * turb)
        img = _ramp(t, [c1, c2])
    elif pattern == "bricks":
        rows = int(rng.choice([4, 8]))
        cols = rows // 2
        h, w = size / rows, size / cols
        row = np.floor(yy / h)
        xs = xx + (row % 2) * w / 2
        dx = np.abs((xs % w) - w / 2) - (w / 2 - 2.0)
        dy = np.abs((yy % h) - h / 2) - (h / 2 - 2.0)
        mortar = _soft_step(np.maximum(dx, dy), 1.5)
        shade = periodic_noise(rng, size, beta=0.5, min_wavelength=8.0)
        brick = _ramp(shade * 0.6 + 0.2, [c1, c2])
        img = brick * (1 - mortar[..., None]) + np.asarray(0.6 + 0.3 * c3, np.float32) * mortar[..., None]
    elif pattern == "gradient":
        kx, ky = int(rng.integers(0, 3)), int(rng.integers(1, 3))
        t = 0.5 + 0.5 * np.cos(2 * np.pi * (kx * xx + ky * yy) / size)
        img = _ramp(t, [c1, c2, c3])
    else:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    img = img + rng.uniform(0.0, 0.12) * grain
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# --- photo crops --------------------------------------------------------------------------------------------


def list_images(texture_dir: str | Path) -> list[Path]:
    """All image files under ``texture_dir`` (recursive, sorted, so the choice is deterministic)."""
    root = Path(texture_dir)
    if not root.is_dir():
        raise InputError(f"texture folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
    return files


def photo_texture(rng: np.random.Generator, path: Path, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A random crop of a photo, mirrored into a seamless tile of ``(size, size, 3)`` in [0, 1]."""
    img = read_rgb(path)
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.2, 0.6))
    side = min(max(side, 8), h, w)  # at least 8 px, unless the photo itself is smaller
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = cv2.resize(img[y0 : y0 + side, x0 : x0 + side], (size // 2, size // 2), interpolation=cv2.INTER_AREA)
    tile = np.concatenate([crop, crop[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[::-1]], axis=0)
    return tile.astype(np.float32) / 255.0


class TextureBank:
    """Draws textures for surfaces: photo crops from ``texture_dir`` (if given) mixed with procedural ones.

    It has its own random stream, so the choice of textures never changes a scene's geometry.
    """

    def __init__(self, rng: np.random.Generator, texture_dir: str | Path | None = None, photo_fraction: float = 0.6):
        self.rng = rng
        self.photos = list_images(texture_dir) if texture_dir is not None else []
        self.photo_fraction = photo_fraction if self.photos else 0.0

    def draw(self, period: tuple[float, float], patterns: tuple[str, ...] | None = None) -> Texture:
        """A texture whose tile spans a random length in ``period`` (metres); ``patterns`` forces procedural."""
        rng = self.rng
        if patterns is None and rng.random() < self.photo_fraction:
            image = photo_texture(rng, self.photos[rng.integers(len(self.photos))])
        else:
            pattern = None if patterns is None else patterns[rng.integers(len(patterns))]
            image = procedural_texture(rng, pattern)
        return Texture(levels=build_pyramid(image), period=float(rng.uniform(*period)))
