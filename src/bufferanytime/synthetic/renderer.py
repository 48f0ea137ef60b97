"""Deterministic procedural video with exact depth, normals and optical flow (``render_video``).

Each pixel centre casts one ray (vectorised numpy, float64) against every primitive of a random scene
(:mod:`bufferanytime.synthetic.scene`). The first hit gives metric z-depth and the normal exactly; the
colour is a mip-mapped texture looked up in the hit object's own coordinates, Lambertian-shaded by a
directional light (with shadows from the objects) plus a hemispherical ambient term, so appearance
depends on the normals and moves exactly with the surfaces. Optical flow transports each hit point, in
its object's frame, to the adjacent frame and projects it; the flow is valid where that point lands in
the image, a ray cast through the landing position hits the same surface point (not occluded), and the
pixels around the landing position see the same object (so bilinear warping does not mix surfaces).
Optional nuisances (light flicker, exposure jitter, sensor noise) change only the colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bufferanytime.errors import InputError
from bufferanytime.synthetic.scene import CAMERA_MOTIONS, OBJECT_MOTIONS, Scene, SceneObject, sample_scene
from bufferanytime.synthetic.textures import TextureBank, sample_texture

LOD_BIAS = 0.5  # extra mip level: textures slightly softer than the pixel grid, so resampling is faithful
SHADOW_OFFSET = 1e-4  # metres a shadow ray starts off its surface, against self-shadowing
VALID_DEPTH_RTOL = 1e-3  # a transported point is visible when its depth matches the surface hit there
TRIPLANAR_SHARPNESS = 4.0  # exponent on |normal| blending the three planar texture projections
SKY_BRIGHTNESS = 0.95  # emitted colour scale of the sky dome


@dataclass
class SyntheticVideo:
    """A rendered video and its exact geometry; shapes are ``T`` frames of ``H x W`` pixels.

    ``depth`` is metric z-depth (along the optical axis, metres). ``normal`` are unit vectors in camera
    coordinates (x right, y up, z towards the camera). ``flow_fwd[k]`` maps frame k to k+1 and
    ``flow_bwd[k]`` frame k+1 to k, in pixels: ``src(x)`` matches ``dst(x + flow(x))``; the ``flow_valid_*``
    masks mark pixels that land in view, not occluded, with the same object around the landing position
    (a one-pixel band along occlusion edges is thus invalid). ``poses`` are
    camera-to-world 4x4 matrices whose camera axes follow the normals' convention (x right, y up, z back).
    ``object_id`` indexes ``object_names`` (the surface seen at each pixel), and ``object_moving`` says which
    objects move on their own (``moving`` is that per pixel). ``camera_motion`` and ``object_motion`` are the
    options the scene was drawn with (``render_video``).
    """

    rgb: np.ndarray  # (T, H, W, 3) uint8
    depth: np.ndarray  # (T, H, W) float32
    normal: np.ndarray  # (T, H, W, 3) float32
    flow_fwd: np.ndarray  # (T-1, H, W, 2) float32
    flow_bwd: np.ndarray  # (T-1, H, W, 2) float32
    flow_valid_fwd: np.ndarray  # (T-1, H, W) bool
    flow_valid_bwd: np.ndarray  # (T-1, H, W) bool
    intrinsics: dict[str, float]
    poses: list[np.ndarray]
    seed: int
    object_id: np.ndarray  # (T, H, W) int16
    object_names: list[str]
    nuisances: dict[str, float] = field(default_factory=dict)
    flicker_gains: list[float] = field(default_factory=list)
    exposure_gains: list[float] = field(default_factory=list)
    scene_kind: str = ""
    object_moving: list[bool] = field(default_factory=list)
    camera_motion: str = "wander"
    object_motion: str = "wander"

    @property
    def moving(self) -> np.ndarray:
        """Bool ``(T, H, W)``: the pixel sees an object that moves on its own (not only with the camera)."""
        flags = np.asarray(list(self.object_moving) or [False] * len(self.object_names), bool)
        return flags[self.object_id]

    @property
    def num_frames(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])


@dataclass
class _Hits:
    """First hits of a batch of rays in one frame."""

    depth: np.ndarray  # (N,) ray parameter; z-depth for camera rays with unit -z component
    index: np.ndarray  # (N,) object index, -1 on a miss
    local: np.ndarray  # (N, 3) hit point in the hit object's local frame


def _camera_rays(intrinsics: dict[str, float], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Camera-frame directions through pixel positions ``u``, ``v``, scaled to a camera-z of ``-1``."""
    return np.stack(
        [(u - intrinsics["cx"]) / intrinsics["fx"], -(v - intrinsics["cy"]) / intrinsics["fy"], -np.ones_like(u)],
        axis=1,
    )


def _mat(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``p @ m`` for ``(N, 3) @ (3, 3)``, as three matrix-vector products.

    A threaded BLAS is an order of magnitude slower on such thin matrix products than on these.
    """
    if p.ndim == 1:
        return p @ m
    return np.stack([p @ m[:, 0], p @ m[:, 1], p @ m[:, 2]], axis=1)


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of ``(N, 3)`` arrays (``b`` may be a single vector)."""
    return a @ b if b.ndim == 1 else np.einsum("ij,ij->i", a, b)


def _groups(index: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(value, positions)`` for each non-negative value in an integer array, in increasing order."""
    order = np.argsort(index, kind="stable")
    ends = np.cumsum(np.bincount(index + 1))
    starts = ends - np.bincount(index + 1)
    return [(v - 1, order[a:e]) for v, (a, e) in enumerate(zip(starts, ends, strict=True)) if v > 0 and e > a]


def _cast(objects: list[SceneObject], frame: int, origin: np.ndarray, dirs: np.ndarray) -> _Hits:
    """First hit among ``objects`` posed at ``frame`` of rays ``origin + t * dirs`` (origin (3,) or (N, 3)).

    Rays are tested against an object only where they pass through its bounding sphere.
    """
    n = dirs.shape[0]
    best = np.full(n, np.inf)
    index = np.full(n, -1, np.int64)
    dd = None
    for i, obj in enumerate(objects):
        rot = obj.rotations[frame]
        rel = obj.translations[frame] - origin
        radius = obj.shape.radius
        if np.isfinite(radius):
            if dd is None:
                dd = _rowdot(dirs, dirs)
            dc = _rowdot(dirs, rel)
            cc = _rowdot(rel, rel) if rel.ndim == 2 else float(rel @ rel)
            near = (cc - dc * dc / dd <= radius**2) & ((dc > 0) | (cc <= radius**2))
            cand = np.nonzero(near)[0]
            if cand.size == 0:
                continue
            d_local = _mat(dirs[cand], rot)
            o_local = _mat(-rel[cand] if rel.ndim == 2 else -rel, rot)
        else:
            cand = slice(None)
            d_local = _mat(dirs, rot)
            o_local = _mat(-rel, rot)
        if o_local.ndim == 1:
            o_local = np.broadcast_to(o_local, d_local.shape)
        t = obj.shape.intersect(o_local, d_local)
        closer = t < best[cand]
        best[cand] = np.where(closer, t, best[cand])
        index[cand] = np.where(closer, i, index[cand])
    local = np.zeros((n, 3))
    points = origin + np.where(index >= 0, best, 0.0)[:, None] * dirs
    for i, sel in _groups(index):
        local[sel] = _mat(points[sel] - objects[i].translations[frame], objects[i].rotations[frame])
    return _Hits(depth=best, index=index, local=local)


def _shade(
    scene: Scene, frame: int, hits: _Hits, eye: np.ndarray, dirs: np.ndarray, flicker: float
) -> tuple[np.ndarray, np.ndarray]:
    """Colour (N, 3) in linear [0, 1] before exposure/noise, and world normals (N, 3), of camera hits."""
    n = hits.depth.shape[0]
    color = np.zeros((n, 3))
    normal_world = np.zeros((n, 3))
    f = 0.5 * (scene.intrinsics["fx"] + scene.intrinsics["fy"])
    ray_len = np.linalg.norm(dirs, axis=1)
    shadow_casters = [o for o in scene.objects if o.casts_shadow]
    for i, sel in _groups(hits.index):
        obj = scene.objects[i]
        rot = obj.rotations[frame]
        n_local = obj.shape.normal(hits.local[sel])
        n_world = _mat(n_local, rot.T)
        normal_world[sel] = n_world
        # mip level from the pixel footprint on the surface (its long axis, stretched at grazing angles)
        cos = np.abs(np.einsum("ij,ij->i", n_world, dirs[sel])) / ray_len[sel]
        footprint = hits.depth[sel] * ray_len[sel] / f / np.maximum(cos, 1e-6)
        lod = np.log2(np.maximum(footprint * obj.texture.size / obj.texture.period, 1e-9)) + LOD_BIAS
        albedo = _triplanar(obj, hits.local[sel] + obj.uv_offset, n_local, lod)
        if obj.emissive:
            elevation = np.clip(_mat(hits.local[sel], rot.T)[:, 1] / obj.shape.r, 0.0, 1.0)
            haze = (1.0 - elevation)[:, None] ** 6
            color[sel] = SKY_BRIGHTNESS * (albedo * (1 - haze) + scene.haze_color * haze)
            continue
        lambert = np.maximum(n_world @ scene.light_dir, 0.0)
        lit = np.nonzero(lambert > 0)[0]
        if lit.size and shadow_casters:
            points = eye + hits.depth[sel[lit], None] * dirs[sel[lit]] + SHADOW_OFFSET * n_world[lit]
            blocked = _cast(shadow_casters, frame, points, np.broadcast_to(scene.light_dir, points.shape))
            lambert[lit[blocked.index >= 0]] = 0.0
        ambient = scene.ambient * (0.8 + 0.2 * n_world[:, 1])
        light = ambient + scene.light_intensity * flicker * lambert
        color[sel] = albedo * light[:, None]
    return color, normal_world


def _triplanar(obj: SceneObject, p: np.ndarray, n_local: np.ndarray, lod: np.ndarray) -> np.ndarray:
    """Texture colour (N, 3) blended from planar projections along the local axes, weighted by the normal.

    On planes and box faces a single projection has weight one, so it is an exact planar mapping.
    """
    weights = np.abs(n_local) ** TRIPLANAR_SHARPNESS
    weights[weights < 1e-4] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    out = np.zeros((p.shape[0], 3))
    for axis, (a, b) in enumerate(((2, 1), (0, 2), (0, 1))):
        sel = np.nonzero(weights[:, axis] > 0)[0]
        if sel.size:
            rgb = sample_texture(obj.texture, p[sel, a], p[sel, b], lod[sel])
            out[sel] += weights[sel, axis, None] * rgb
    return out


def _transport(
    scene: Scene, dst: int, hits: _Hits, dst_index: np.ndarray, uv: tuple[np.ndarray, np.ndarray], size
) -> tuple[np.ndarray, np.ndarray]:
    """Flow (N, 2) and validity (N,) of the camera hits of one frame into frame ``dst``.

    Valid: the point lands inside the image, a ray through the landing position hits that very point
    (it is not occluded), and the four pixel centres around the landing position (``dst_index``, the
    object seen at each pixel of ``dst``) all see its object, so bilinear lookups do not mix surfaces.
    """
    height, width = size
    k = scene.intrinsics
    points = np.zeros_like(hits.local)
    for i, sel in _groups(hits.index):
        obj = scene.objects[i]
        points[sel] = _mat(hits.local[sel], obj.rotations[dst].T) + obj.translations[dst]
    pose = scene.cam_to_world[dst]
    cam = _mat(points - pose[:3, 3], pose[:3, :3])
    z = -cam[:, 2]
    front = z > 1e-6
    zs = np.where(front, z, 1.0)
    u2 = k["cx"] + k["fx"] * cam[:, 0] / zs
    v2 = k["cy"] - k["fy"] * cam[:, 1] / zs
    flow = np.stack([u2 - uv[0], v2 - uv[1]], axis=1)
    inside = front & (u2 >= 0) & (u2 < width) & (v2 >= 0) & (v2 < height)
    valid = np.zeros(points.shape[0], bool)
    idx = np.nonzero(inside)[0]
    if idx.size:
        check = _cast(scene.objects, dst, pose[:3, 3], _mat(_camera_rays(k, u2[idx], v2[idx]), pose[:3, :3].T))
        same = (check.index == hits.index[idx]) & (np.abs(check.depth - z[idx]) <= VALID_DEPTH_RTOL * z[idx])
        x0 = np.clip(np.floor(u2[idx] - 0.5).astype(np.int64), 0, width - 1)
        y0 = np.clip(np.floor(v2[idx] - 0.5).astype(np.int64), 0, height - 1)
        x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
        for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)):
            same &= dst_index[yy * width + xx] == hits.index[idx]
        valid[idx] = same
    return flow, valid


def render_video(
    seed: int,
    num_frames: int,
    size: tuple[int, int],
    *,
    flicker: float = 0.0,
    exposure: float = 0.0,
    noise: float = 0.0,
    texture_dir: str | Path | None = None,
    camera: str = "wander",
    objects: str = "wander",
) -> SyntheticVideo:
    """Render a random video of ``num_frames`` frames of ``size = (H, W)``, fully determined by ``seed``.

    ``flicker`` is the relative amplitude of a per-frame jitter of the directional light, ``exposure`` of
    a per-frame global gain, ``noise`` the std of Gaussian pixel noise on [0, 1]; they change only the
    colours (the scene, depth, normals and flow are the same for a seed). ``texture_dir`` adds crops of
    the photos found there to the procedural textures. ``camera`` (``"wander"``, ``"dolly"`` straight ahead,
    ``"rotate"`` on the spot) and ``objects`` (``"wander"``, ``"depth"`` along the line of sight, ``"static"``)
    choose the motions (:mod:`bufferanytime.synthetic.scene`).
    """
    height, width = (int(s) for s in size)
    _check_arguments(seed, num_frames, height, width, flicker, exposure, noise)
    if camera not in CAMERA_MOTIONS or objects not in OBJECT_MOTIONS:
        raise InputError(f"camera must be one of {', '.join(CAMERA_MOTIONS)} and objects one of "
                         f"{', '.join(OBJECT_MOTIONS)}, got {camera!r} and {objects!r}")
    # independent streams: geometry and motion, textures, nuisances (each leaves the others unchanged)
    scene_rng, texture_rng, nuisance_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    bank = TextureBank(texture_rng, texture_dir)
    scene = sample_scene(scene_rng, num_frames, (height, width), bank, camera=camera, objects=objects)
    nuisances = _Nuisances(
        flicker_gains=1.0 + flicker * nuisance_rng.uniform(-1.0, 1.0, num_frames),
        exposure_gains=1.0 + exposure * nuisance_rng.uniform(-1.0, 1.0, num_frames),
        noise=noise,
        rng=nuisance_rng,
    )
    buffers = _render_buffers(scene, seed, num_frames, (height, width), nuisances)
    return SyntheticVideo(
        **buffers,
        intrinsics={k: float(v) for k, v in scene.intrinsics.items()},
        poses=[p.copy() for p in scene.cam_to_world],
        seed=int(seed),
        object_names=[o.name for o in scene.objects],
        nuisances={"flicker": float(flicker), "exposure": float(exposure), "noise": float(noise)},
        flicker_gains=[float(g) for g in nuisances.flicker_gains],
        exposure_gains=[float(g) for g in nuisances.exposure_gains],
        scene_kind=scene.kind,
        object_moving=[bool(o.moving) for o in scene.objects],
        camera_motion=camera,
        object_motion=objects,
    )


def _check_arguments(
    seed: int, num_frames: int, height: int, width: int, flicker: float, exposure: float, noise: float
) -> None:
    """Refuse arguments no video can be rendered with, in one line each."""
    if num_frames < 1:
        raise InputError(f"num_frames must be at least 1, got {num_frames}")
    if height < 2 or width < 2:
        raise InputError(f"size must be at least 2x2 pixels, got {height}x{width}")
    if seed < 0:
        raise InputError(f"seed must be non-negative, got {seed}")
    for name, value in (("flicker", flicker), ("exposure", exposure)):
        if not 0.0 <= value < 1.0:
            raise InputError(f"{name} must be in [0, 1), got {value}")
    if noise < 0.0:
        raise InputError(f"noise must be non-negative, got {noise}")


@dataclass
class _Nuisances:
    """Per-frame light and exposure gains and the pixel-noise std, drawn from their own stream ``rng``."""

    flicker_gains: np.ndarray  # (T,)
    exposure_gains: np.ndarray  # (T,)
    noise: float
    rng: np.random.Generator


def _empty_buffers(num_frames: int, height: int, width: int) -> dict[str, np.ndarray]:
    """Zeroed arrays of every :class:`SyntheticVideo` buffer (flows have one entry fewer than frames)."""
    pairs = max(num_frames - 1, 0)
    return {
        "rgb": np.zeros((num_frames, height, width, 3), np.uint8),
        "depth": np.zeros((num_frames, height, width), np.float32),
        "normal": np.zeros((num_frames, height, width, 3), np.float32),
        "object_id": np.zeros((num_frames, height, width), np.int16),
        "flow_fwd": np.zeros((pairs, height, width, 2), np.float32),
        "flow_bwd": np.zeros((pairs, height, width, 2), np.float32),
        "flow_valid_fwd": np.zeros((pairs, height, width), bool),
        "flow_valid_bwd": np.zeros((pairs, height, width), bool),
    }


def _render_buffers(
    scene: Scene, seed: int, num_frames: int, size: tuple[int, int], nuisances: _Nuisances
) -> dict[str, np.ndarray]:
    """Every buffer of every frame: cast and shade each frame, then the flows between it and the previous one."""
    height, width = size
    jj, ii = np.meshgrid(np.arange(width, dtype=np.float64) + 0.5, np.arange(height, dtype=np.float64) + 0.5)
    uv = (jj.ravel(), ii.ravel())
    cam_dirs = _camera_rays(scene.intrinsics, *uv)
    out = _empty_buffers(num_frames, height, width)
    previous: _Hits | None = None
    for t in range(num_frames):
        hits = _render_frame(scene, seed, t, cam_dirs, nuisances, out)
        if previous is not None:
            _render_flows(scene, t, previous, hits, uv, out)
        previous = hits
    return out


def _render_frame(
    scene: Scene, seed: int, t: int, cam_dirs: np.ndarray, nuisances: _Nuisances, out: dict[str, np.ndarray]
) -> _Hits:
    """Cast frame ``t``'s camera rays; write its colours, depth, normals and object ids into ``out``."""
    height, width = out["depth"].shape[1:]
    pose = scene.cam_to_world[t]
    eye, dirs = pose[:3, 3], _mat(cam_dirs, pose[:3, :3].T)
    hits = _cast(scene.objects, t, eye, dirs)
    if np.any(hits.index < 0):  # the room and the sky dome enclose the camera
        raise RuntimeError(f"seed {seed}: {np.sum(hits.index < 0)} rays escaped the scene in frame {t}")
    color, n_world = _shade(scene, t, hits, eye, dirs, nuisances.flicker_gains[t])
    color = color * nuisances.exposure_gains[t]
    if nuisances.noise > 0:
        color = color + nuisances.rng.normal(0.0, nuisances.noise, color.shape)
    out["rgb"][t] = np.round(np.clip(color, 0.0, 1.0) * 255.0).reshape(height, width, 3).astype(np.uint8)
    out["depth"][t] = hits.depth.reshape(height, width)
    n_cam = _mat(n_world, pose[:3, :3])
    n_cam /= np.linalg.norm(n_cam, axis=1, keepdims=True)
    out["normal"][t] = n_cam.reshape(height, width, 3)
    out["object_id"][t] = hits.index.reshape(height, width)
    return hits


def _render_flows(
    scene: Scene, t: int, previous: _Hits, hits: _Hits, uv: tuple[np.ndarray, np.ndarray], out: dict[str, np.ndarray]
) -> None:
    """Forward (frame t-1 -> t) and backward (t -> t-1) flows and their validity, written into ``out``."""
    size = out["depth"].shape[1:]
    forward, valid = _transport(scene, t, previous, hits.index, uv, size)
    out["flow_fwd"][t - 1], out["flow_valid_fwd"][t - 1] = forward.reshape(*size, 2), valid.reshape(size)
    backward, valid = _transport(scene, t - 1, hits, previous.index, uv, size)
    out["flow_bwd"][t - 1], out["flow_valid_bwd"][t - 1] = backward.reshape(*size, 2), valid.reshape(size)
