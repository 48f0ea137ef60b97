"""A stabilization loss that knows the camera moved: flow-matched points compared in 3D, not as raw values.

The flow loss of Alg. 2 (:mod:`bufferanytime.losses.stabilization`) asks ``G[k+1](p + flow(p)) = G[k](p)``. That
is right for a camera that only pans sideways over a static scene, and wrong whenever the camera moves along its
axis (a point's depth changes by the camera's forward motion) or rotates (camera-space normals turn with it): the
flow loss then penalises correct predictions. Here, with the relative camera pose ``(R, t)`` from frame k to k+1:

- depth: each pixel p of frame k is lifted with its depth, ``X = D[k](p) * ray(p)``, moved into frame k+1,
  ``X' = R X + t``, and its depth there, ``z' = -X'_z``, is compared with ``D[k+1](p + flow(p))``; the
  difference is taken in log depth (a relative change: near and far weigh alike, and a global scale cancels,
  which is all a pure rotation can tell);
- normals: ``R N[k](p)`` is compared with ``N[k+1](p + flow(p))`` (L1 over the three channels, as Alg. 2);
- moving objects: a pixel whose 3D motion disagrees with the camera's is left out instead of being flattened.
  With depth, the rigid reprojection of ``X`` must land within ``MOTION_PX + MOTION_REL * |flow|`` pixels of the
  flow target; without depth (normals alone) the flow target must lie that close to p's epipolar line (a pure
  rotation: to p turned by R, where depth plays no part). An object moving along its own epipolar line (straight
  towards a camera moving forward) is invisible to the test without depth.

Everything else is as in Alg. 2 (and shares its code): both directions, the cycle, edge and validity masks, flows
and masks carry no gradient, each term normalised by ``(K-1) H W``. Poses are camera-to-world 4x4 matrices with
camera axes x right, y up, z towards the viewer (those of the normals and of ``bufferanytime synth``);
intrinsics ``(fx, fy, cx, cy)`` are in pixels of the buffers' grid, pixel ``(i, j)`` centred at ``(j+.5, i+.5)``.

Relative disparity has no metric scale, while a pose's translation has one. :func:`disparity_to_depth` turns a
clip's disparity into depth on the poses' scale with ONE affine map per clip, ``1/D = a d + b``, fitted without
gradient by linear least squares to what the flow and the poses triangulate (details there).
"""

from __future__ import annotations

import torch

from bufferanytime.constants import CYCLE_TAU
from bufferanytime.flow.warp import warp
from bufferanytime.losses.stabilization import _cycle_masks, _edge_masks, _with_batch, valid_pair_masks

MOTION_PX = 1.0  # pixels a flow target may differ from the rigid reprojection of its point (static scene)
MOTION_REL = 0.1  # ... plus this fraction of the flow's length (depth errors move the reprojection with the flow)
DEPTH_EPS = 1e-6  # depth is clamped to this before a logarithm
DIRECTION_CHANNELS = 3  # buffers of 3 channels are directions (normals), turned by the rotation; 1 channel: depth
FIT_KEEP = 0.8  # the affine disparity fit is redone on this fraction of the pixels with the smallest residuals
MIN_BASELINE = 1e-6  # translation (in the poses' units) below which a pair carries no scale (a pure rotation)


def relative_poses(poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-to-world ``(B, K, 4, 4)`` -> the transforms of camera k to k+1 and of k+1 to k, ``(B, K-1, 4, 4)``,
    in float64 (a product of two large world poses loses precision in float32)."""
    poses = poses.double()
    inverse = torch.linalg.inv(poses)
    return inverse[:, 1:] @ poses[:, :-1], inverse[:, :-1] @ poses[:, 1:]


def known_poses(rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative poses ``(N, 4, 4)`` with the identity in place of unknown ones (a frame an estimated camera lost
    has a NaN pose), and which pairs are known ``(N,)``: the unknown pairs are left out of the loss and the fit."""
    known = torch.isfinite(rel).flatten(1).all(dim=1)
    eye = torch.eye(4, dtype=rel.dtype, device=rel.device)
    return torch.where(known.view(-1, 1, 1), rel, eye), known


def _pixel_rays(intrinsics: torch.Tensor, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """Camera rays ``(N, 3, H, W)`` through the pixel centres, scaled to a camera z of -1 (x right, y up)."""
    fx, fy, cx, cy = (intrinsics[:, i].to(dtype).view(-1, 1, 1) for i in range(4))
    ys = torch.arange(h, device=intrinsics.device, dtype=dtype).view(1, h, 1) + 0.5
    xs = torch.arange(w, device=intrinsics.device, dtype=dtype).view(1, 1, w) + 0.5
    x = ((xs - cx) / fx).expand(-1, h, w)
    y = (-(ys - cy) / fy).expand(-1, h, w)
    return torch.stack([x, y, -torch.ones_like(x)], dim=1)


def _apply(rt: torch.Tensor, x: torch.Tensor, translate: bool = True) -> torch.Tensor:
    """``R x + t`` (or ``R x``) for 4x4 ``rt`` ``(N, 4, 4)`` and points ``(N, 3, H, W)``."""
    rot = rt[:, :3, :3].to(x.dtype)
    out = torch.einsum("nij,njhw->nihw", rot, x)
    return out + rt[:, :3, 3].to(x.dtype).view(-1, 3, 1, 1) if translate else out


def _project(points: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Pixel positions ``(N, 2, H, W)`` (x right, y down, centres at +0.5) of camera points ``(N, 3, H, W)``."""
    fx, fy, cx, cy = (intrinsics[:, i].to(points.dtype).view(-1, 1, 1) for i in range(4))
    z = (-points[:, 2]).clamp_min(DEPTH_EPS)
    return torch.stack([cx + fx * points[:, 0] / z, cy - fy * points[:, 1] / z], dim=1)


def _targets(flow: torch.Tensor) -> torch.Tensor:
    """Where the pixel centres land, ``p + flow(p)``, ``(N, 2, H, W)``."""
    _, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1) + 0.5
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w) + 0.5
    return torch.stack([xs + flow[:, 0], ys + flow[:, 1]], dim=1)


@torch.no_grad()
def rigid_mask(
    flow: torch.Tensor, rel: torch.Tensor, intrinsics: torch.Tensor, depth: torch.Tensor | None = None,
    motion_px: float = MOTION_PX,
) -> torch.Tensor:
    """Bool ``(N, H, W)``: pixels whose flow agrees with the camera's motion ``rel`` (source to target camera).

    With ``depth (N, 1, H, W)`` of the source frame: the rigid reprojection lands within ``motion_px +
    MOTION_REL * |flow|`` of the flow target and in front of the camera. Without: the flow target lies that close
    to the epipolar line (or, for a pure rotation, to the rotated pixel). See the module docstring.
    """
    n, _, h, w = flow.shape
    flow = flow.double()
    k = intrinsics.double()
    rays = _pixel_rays(k, h, w, torch.float64)
    target = _targets(flow)
    tolerance = motion_px + MOTION_REL * flow.norm(dim=1)
    if depth is not None:
        moved = _apply(rel, rays * depth.double().clamp_min(DEPTH_EPS))
        miss = (_project(moved, k) - target).norm(dim=1)
        return (miss <= tolerance) & (-moved[:, 2] > DEPTH_EPS)
    turned = _apply(rel, rays, translate=False)
    miss = (_project(turned, k) - target).norm(dim=1)
    baseline = rel[:, :3, 3].double().norm(dim=1)
    moving_pairs = baseline > MIN_BASELINE
    if moving_pairs.any():
        miss = torch.where(moving_pairs.view(-1, 1, 1), _epipolar_distance(turned, target, rel, k), miss)
    return miss <= tolerance


def _epipolar_distance(turned: torch.Tensor, target: torch.Tensor, rel: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Pixel distance of ``target`` to the epipolar line of each source pixel (``turned``: its ray rotated into
    the target camera). The epipolar plane holds the target camera's centre, ``turned`` and ``t``; a pixel's ray
    ``q`` lies in it when ``(turned x t) . q = 0``, a line ``A u + B v + C = 0`` in pixels."""
    t = rel[:, :3, 3].double().view(-1, 3, 1, 1).expand_as(turned)
    normal = torch.cross(turned, t, dim=1)
    fx, fy, cx, cy = (k[:, i].view(-1, 1, 1) for i in range(4))
    q = torch.stack([(target[:, 0] - cx) / fx, -(target[:, 1] - cy) / fy, -torch.ones_like(target[:, 0])], 1)
    slope = torch.sqrt((normal[:, 0] / fx) ** 2 + (normal[:, 1] / fy) ** 2).clamp_min(1e-30)
    return (normal * q).sum(dim=1).abs() / slope


@torch.no_grad()
def disparity_to_depth_params(
    disparity: torch.Tensor, flow_fwd: torch.Tensor, poses: torch.Tensor, intrinsics: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per clip ``(a, b)`` ``(B, 2)`` with ``1 / depth = a * disparity + b`` on the scale of the poses' translation.

    For a static point at pixel p of frame k, with depth z, the flow target's ray r' in frame k+1 is parallel to
    ``z R r + t``: ``z (R r x r') = -(t x r')``, i.e. ``R r x r' + (1/z) (t x r') = 0`` - linear in ``1/z``, so
    in ``(a, b)``. All pairs and pixels of a clip (``mask``: usable ones, e.g. the cycle mask) give one linear
    least-squares problem, weighted by parallax by construction (rows scale with ``|t x r'|``); it is solved again
    on the ``FIT_KEEP`` fraction with the smallest residuals (moving objects, wrong flow). It assumes the static
    scene dominates: moving objects covering a fifth of a clip with little camera parallax bias it. A clip whose
    camera does not translate carries no scale: ``a = 1 / median(disparity)``, ``b = 0`` (its depth is defined up
    to scale, and the log-depth loss is blind to the scale). ``disparity (B, K, H, W)``, flows ``(B, K-1, 2, H, W)``.
    """
    b, k, h, w = disparity.shape
    fwd, _ = relative_poses(poses)
    n = b * (k - 1)
    rel, known = known_poses(fwd.reshape(n, 4, 4))
    kk = intrinsics.double().repeat_interleave(k - 1, dim=0)
    rays = _pixel_rays(kk, h, w, torch.float64)
    flow = flow_fwd.double().reshape(n, 2, h, w)
    target = _targets(flow)
    fx, fy, cx, cy = (kk[:, i].view(-1, 1, 1) for i in range(4))
    ray_next = torch.stack([(target[:, 0] - cx) / fx, -(target[:, 1] - cy) / fy, -torch.ones_like(target[:, 0])], 1)
    u = torch.cross(_apply(rel, rays, translate=False), ray_next, dim=1)  # (n, 3, h, w)
    v = torch.cross(rel[:, :3, 3].view(-1, 3, 1, 1).expand_as(ray_next), ray_next, dim=1)
    d = disparity[:, :-1].double().reshape(n, h, w)
    use = torch.ones(n, h, w, dtype=torch.bool, device=disparity.device) if mask is None else mask.reshape(n, h, w)
    use = use & known.view(n, 1, 1)
    params = torch.empty(b, 2, dtype=torch.float64, device=disparity.device)
    for clip in range(b):
        rows = slice(clip * (k - 1), (clip + 1) * (k - 1))
        params[clip] = _fit_clip(d[rows], u[rows], v[rows], use[rows], disparity[clip], rel[rows])
    return params.to(disparity.dtype)


def _fit_clip(d, u, v, use, disparity, rel) -> torch.Tensor:
    """Least squares ``(a, b)`` of ``u + (a d + b) v = 0`` over one clip's usable pixels (see the caller)."""
    scale = 1.0 / disparity.double().median().clamp_min(1e-12)
    fallback = torch.stack([scale, torch.zeros_like(scale)])
    if rel[:, :3, 3].norm(dim=1).max() <= MIN_BASELINE:
        return fallback
    sel = use & torch.isfinite(d) & (v.norm(dim=1) > 0)
    if int(sel.sum()) < 8:
        return fallback
    vv = v.permute(0, 2, 3, 1)[sel]  # (m, 3)
    uu = u.permute(0, 2, 3, 1)[sel]
    dd = d[sel][:, None].expand(-1, 3)
    design = torch.stack([(dd * vv).reshape(-1), vv.reshape(-1)], dim=1)  # (3m, 2)
    rhs = -uu.reshape(-1)
    for _ in range(2):
        solution = torch.linalg.lstsq(design, rhs[:, None]).solution[:, 0]
        residual = (design @ solution - rhs).reshape(-1, 3).norm(dim=1)
        keep = residual <= torch.quantile(residual, FIT_KEEP)
        design, rhs = design.reshape(-1, 3, 2)[keep].reshape(-1, 2), rhs.reshape(-1, 3)[keep].reshape(-1)
    if not torch.isfinite(solution).all() or solution[0] <= 0:
        return fallback
    return solution


def disparity_to_depth(disparity: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """``1 / (a d + b)`` per clip (``params`` from :func:`disparity_to_depth_params`), kept positive;
    differentiable with respect to ``disparity`` (the fit itself carries no gradient)."""
    shape = (-1,) + (1,) * (disparity.ndim - 1)
    inverse = params[:, 0].view(shape) * disparity + params[:, 1].view(shape)
    return 1.0 / inverse.clamp_min(1.0 / 1e6)


def stabilization_loss_3d(
    buffers: torch.Tensor,
    flow_fwd: torch.Tensor,
    flow_bwd: torch.Tensor,
    poses: torch.Tensor,
    intrinsics: torch.Tensor,
    *,
    depth: torch.Tensor | None = None,
    tau: float = CYCLE_TAU,
    edge_mask: bool | torch.Tensor = True,
    valid: torch.Tensor | None = None,
    cycle_fwd: torch.Tensor | None = None,
    cycle_bwd: torch.Tensor | None = None,
    mask_motion: bool = True,
    motion_px: float = MOTION_PX,
) -> torch.Tensor:
    """The 3D-consistent stabilization loss (module docstring); a drop-in for ``stabilization_loss``.

    Args:
        buffers: ``(B, K, 1, H, W)`` positive depth on the poses' scale (points along the pixels' rays, moved by
            the whole pose), or ``(B, K, 3, H, W)`` unit camera-space normals (directions, turned by the rotation);
            the number of channels says which. Unbatched shapes are accepted too.
        flow_fwd, flow_bwd: as for ``stabilization_loss``, ``(B, K-1, 2, H, W)``.
        poses: camera-to-world ``(B, K, 4, 4)``.
        intrinsics: ``(B, 4)`` fx, fy, cx, cy in pixels of the buffers' grid.
        depth: normals only: ``(B, K, 1, H, W)`` depth used (detached) to find moving objects; without it, the
            depth-free test of :func:`rigid_mask`.
        tau, edge_mask, valid, cycle_fwd, cycle_bwd: as for ``stabilization_loss``.
        mask_motion: leave out pixels whose motion disagrees with the camera's (moving objects).
        motion_px: how far (pixels) a flow target may miss the rigid reprojection before the pixel counts as
            moving, plus ``MOTION_REL`` of the flow's length: about the error of the flow (1 px for DIS; exact
            flows allow far less, and show slower objects).
    """
    buffers = _with_batch(buffers, 5)
    flow_fwd, flow_bwd = _with_batch(flow_fwd, 5), _with_batch(flow_bwd, 5)
    poses, intrinsics = _with_batch(poses, 4), _with_batch(intrinsics, 2)
    b, k, c, h, w = buffers.shape
    directions = _check_shapes(buffers, flow_fwd, flow_bwd, poses, intrinsics)
    if k < 2:
        return buffers.sum() * 0.0
    n = b * (k - 1)
    ff = flow_fwd.detach().to(buffers.dtype).reshape(n, 2, h, w)
    fb = flow_bwd.detach().to(buffers.dtype).reshape(n, 2, h, w)
    rel_f, rel_b, known = _pair_poses(poses.to(buffers.device), b, k)
    kk = intrinsics.to(buffers.device).repeat_interleave(k - 1, dim=0)
    source_depth = (None if depth is None else _with_batch(depth, 5)) if directions else buffers
    with torch.no_grad():
        m_fwd, m_bwd = _cycle_masks(ff, fb, tau, cycle_fwd, cycle_bwd, (b, k, h, w))
        m_fwd, m_bwd = _edge_masks(m_fwd & known, m_bwd & known, buffers, edge_mask)  # known: pairs with poses
        if valid is not None:
            m_fwd, m_bwd = valid_pair_masks(m_fwd, m_bwd, _with_batch(valid, 4), ff, fb, buffers.dtype)
        if mask_motion:
            prev_d, next_d = _pair_depths(source_depth, n, h, w)
            m_fwd = m_fwd & rigid_mask(ff, rel_f, kk, prev_d, motion_px).view(b, k - 1, h, w)
            m_bwd = m_bwd & rigid_mask(fb, rel_b, kk, next_d, motion_px).view(b, k - 1, h, w)
    prev = buffers[:, :-1].reshape(n, c, h, w)
    nxt = buffers[:, 1:].reshape(n, c, h, w)
    err_fwd = _pair_error(prev, nxt, ff, rel_f, kk, directions) * m_fwd.reshape(n, 1, h, w)  # grid of frame k
    err_bwd = _pair_error(nxt, prev, fb, rel_b, kk, directions) * m_bwd.reshape(n, 1, h, w)  # grid of frame k+1
    return 0.5 * (err_fwd.sum() + err_bwd.sum()) / (b * (k - 1) * h * w)


def _pair_poses(poses: torch.Tensor, b: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The relative poses of each pair both ways ``(B (K-1), 4, 4)`` (:func:`known_poses`), and which pairs have
    them ``(B, K-1, 1, 1)``."""
    forward, backward = (known_poses(r.reshape(b * (k - 1), 4, 4)) for r in relative_poses(poses))
    return forward[0], backward[0], (forward[1] & backward[1]).view(b, k - 1, 1, 1)


def _pair_depths(depth: torch.Tensor | None, n: int, h: int, w: int):
    if depth is None:
        return None, None
    depth = depth.detach()
    return depth[:, :-1].reshape(n, 1, h, w), depth[:, 1:].reshape(n, 1, h, w)


def _pair_error(src: torch.Tensor, dst: torch.Tensor, flow: torch.Tensor, rel: torch.Tensor, k: torch.Tensor,
                directions: bool) -> torch.Tensor:
    """Per-pixel error ``(N, C, H, W)`` on the grid of ``src``: its points (or ``directions``, turned only) moved
    into ``dst``'s camera against ``dst`` sampled at the flow targets."""
    sampled = warp(dst, flow)
    if directions:
        return (_apply(rel, src, translate=False) - sampled).abs()
    rays = _pixel_rays(k, src.shape[-2], src.shape[-1], src.dtype)
    moved = _apply(rel, rays * src)
    z = -moved[:, 2:3]
    return (torch.log(z.clamp_min(DEPTH_EPS)) - torch.log(sampled.clamp_min(DEPTH_EPS))).abs()


def _check_shapes(buffers, flow_fwd, flow_bwd, poses, intrinsics) -> bool:
    """ValueError unless the shapes agree; whether the buffers are directions (normals) rather than depth."""
    b, k, c, h, w = buffers.shape
    expected = (b, k - 1, 2, h, w)
    if tuple(flow_fwd.shape) != expected or tuple(flow_bwd.shape) != expected:
        raise ValueError(f"flows must be {expected} for buffers {tuple(buffers.shape)}, "
                         f"got {tuple(flow_fwd.shape)} and {tuple(flow_bwd.shape)}")
    if tuple(poses.shape) != (b, k, 4, 4) or tuple(intrinsics.shape) != (b, 4):
        raise ValueError(f"poses must be {(b, k, 4, 4)} and intrinsics {(b, 4)}, "
                         f"got {tuple(poses.shape)} and {tuple(intrinsics.shape)}")
    if c not in (1, DIRECTION_CHANNELS):
        raise ValueError(f"buffers of {c} channels: depth has 1 channel, normals {DIRECTION_CHANNELS}")
    return c == DIRECTION_CHANNELS


def training_stabilization_3d(
    output: torch.Tensor, flows: dict[str, torch.Tensor], camera: dict[str, torch.Tensor], config, *,
    metric: bool = False,
) -> torch.Tensor:
    """The 3D loss as a training step uses it (``--stabilization 3d``), on a batch's model ``output``.

    ``output``: depth models ``(B, K, H, W)`` - metric depth in metres (``metric``), or relative disparity, turned
    into depth on the poses' scale by :func:`disparity_to_depth` (one affine map per clip fitted on the cycle-
    consistent pixels); normal models ``(B, K, 3, H, W)``, without depth (the depth-free moving-object test).
    ``flows``: the prepared ``flow_fwd``, ``flow_bwd``, ``cycle_fwd``, ``cycle_bwd``; ``camera``: ``poses``
    ``(B, K, 4, 4)`` and ``intrinsics`` ``(B, 4)`` of the training crops; ``config``: ``tau`` and ``edge_mask``.
    """
    poses, intrinsics = camera["poses"], camera["intrinsics"]
    if output.dim() == 5:  # normals
        buffers = output
    elif metric:
        buffers = output.clamp_min(DEPTH_EPS)[:, :, None]
    else:
        params = disparity_to_depth_params(output.detach(), flows["flow_fwd"], poses, intrinsics, flows["cycle_fwd"])
        buffers = disparity_to_depth(output, params)[:, :, None]
    return stabilization_loss_3d(
        buffers, flows["flow_fwd"], flows["flow_bwd"], poses, intrinsics, tau=config.tau,
        edge_mask=config.edge_mask, cycle_fwd=flows["cycle_fwd"], cycle_bwd=flows["cycle_bwd"],
    )
