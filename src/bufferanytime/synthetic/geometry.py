"""Analytic ray intersection of the renderer's primitives, in each primitive's local frame.

Every shape answers two questions for a batch of rays (``(N, 3)`` origins and directions, float64):
``intersect`` gives the ray parameter ``t`` of the first hit in front of the origin (``inf`` on a miss), and
``normal`` gives the unit outward (towards the viewer) normal at local surface points. Directions need not
be unit length; ``t`` is measured in units of the direction, so a direction with camera-z component ``-1``
yields z-depth directly. Exact hits give exact depth and normals, and keep the renderer free of meshes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-9  # smallest accepted ray parameter (rays start at the camera or just off a surface)


def _first_root(a: np.ndarray, b: np.ndarray, c: np.ndarray, far: bool = False) -> np.ndarray:
    """Smallest (or with ``far`` the largest) root of ``a t^2 + b t + c`` that is > EPS, else ``inf``."""
    disc = b * b - 4 * a * c
    hit = disc >= 0
    sq = np.sqrt(np.where(hit, disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_near = (-b - sq) / (2 * a)
        t_far = (-b + sq) / (2 * a)
    if far:
        t = t_far
    else:
        t = np.where(t_near > EPS, t_near, t_far)
    return np.where(hit & (t > EPS), t, np.inf)


@dataclass
class Plane:
    """The one-sided plane ``y = 0`` facing ``+y`` (floor, walls, ceiling, ground after posing)."""

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -o[:, 1] / d[:, 1]
        return np.where((d[:, 1] < 0) & (o[:, 1] > 0) & (t > EPS), t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        n = np.zeros_like(p)
        n[:, 1] = 1.0
        return n

    @property
    def radius(self) -> float:
        return np.inf


@dataclass
class Box:
    """An axis-aligned box centred at the origin with half extents ``half`` (3,)."""

    half: np.ndarray

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            t1 = (-self.half - o) * inv
            t2 = (self.half - o) * inv
        t_near = np.minimum(t1, t2).max(axis=1)
        t_far = np.maximum(t1, t2).min(axis=1)
        return np.where((t_near <= t_far) & (t_near > EPS), t_near, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        axis = np.argmax(np.abs(p) / self.half, axis=1)
        n = np.zeros_like(p)
        rows = np.arange(p.shape[0])
        n[rows, axis] = np.sign(p[rows, axis])
        return n

    @property
    def radius(self) -> float:
        return float(np.linalg.norm(self.half))


@dataclass
class Ellipsoid:
    """An ellipsoid centred at the origin with semi-axes ``axes`` (3,); a sphere when they are equal."""

    axes: np.ndarray

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        os_, ds = o / self.axes, d / self.axes
        a = np.einsum("ij,ij->i", ds, ds)
        b = 2 * np.einsum("ij,ij->i", os_, ds)
        c = np.einsum("ij,ij->i", os_, os_) - 1.0
        return _first_root(a, b, c)

    def normal(self, p: np.ndarray) -> np.ndarray:
        n = p / self.axes**2
        return n / np.linalg.norm(n, axis=1, keepdims=True)

    @property
    def radius(self) -> float:
        return float(np.max(self.axes))


@dataclass
class Cylinder:
    """A capped cylinder around the local y axis, radius ``r``, from ``y = -half_height`` to ``+half_height``."""

    r: float
    half_height: float

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        a = d[:, 0] ** 2 + d[:, 2] ** 2
        b = 2 * (o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2])
        c = o[:, 0] ** 2 + o[:, 2] ** 2 - self.r**2
        t_side = _first_root(a, b, c)
        y_side = o[:, 1] + np.where(np.isfinite(t_side), t_side, 0.0) * d[:, 1]
        t_side = np.where(np.abs(y_side) <= self.half_height, t_side, np.inf)
        t_cap = np.full(o.shape[0], np.inf)
        for y_cap in (-self.half_height, self.half_height):
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (y_cap - o[:, 1]) / d[:, 1]
            px = o[:, 0] + np.where(np.isfinite(t), t, 0.0) * d[:, 0]
            pz = o[:, 2] + np.where(np.isfinite(t), t, 0.0) * d[:, 2]
            ok = (t > EPS) & (px**2 + pz**2 <= self.r**2)
            t_cap = np.minimum(t_cap, np.where(ok, t, np.inf))
        return np.minimum(t_side, t_cap)

    def normal(self, p: np.ndarray) -> np.ndarray:
        rho = np.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2)
        on_cap = np.abs(np.abs(p[:, 1]) - self.half_height) < np.abs(rho - self.r)
        n = np.zeros_like(p)
        safe = np.maximum(rho, 1e-12)
        n[:, 0] = np.where(on_cap, 0.0, p[:, 0] / safe)
        n[:, 2] = np.where(on_cap, 0.0, p[:, 2] / safe)
        n[:, 1] = np.where(on_cap, np.sign(p[:, 1]), 0.0)
        return n

    @property
    def radius(self) -> float:
        return float(np.hypot(self.r, self.half_height))


@dataclass
class Dome:
    """The inside of a sphere of radius ``r`` around the origin: the sky that every outdoor ray hits."""

    r: float

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        a = np.einsum("ij,ij->i", d, d)
        b = 2 * np.einsum("ij,ij->i", o, d)
        c = np.einsum("ij,ij->i", o, o) - self.r**2
        return _first_root(a, b, c, far=True)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return -p / np.linalg.norm(p, axis=1, keepdims=True)

    @property
    def radius(self) -> float:
        return np.inf


Shape = Plane | Box | Ellipsoid | Cylinder | Dome


def lowest_point(shape: Shape, rotation: np.ndarray) -> float:
    """How far the posed shape reaches below its centre along world ``-y`` (to rest it on the floor)."""
    up = rotation[1]  # world y expressed in local coordinates: row 1 of the local-to-world rotation
    if isinstance(shape, Box):
        return float(np.sum(np.abs(up) * shape.half))
    if isinstance(shape, Ellipsoid):
        return float(np.sqrt(np.sum((up * shape.axes) ** 2)))
    if isinstance(shape, Cylinder):
        c = abs(up[1])
        return float(shape.r * np.sqrt(max(0.0, 1 - c * c)) + shape.half_height * c)
    raise TypeError(f"no resting height for {type(shape).__name__}")
