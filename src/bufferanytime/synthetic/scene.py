"""Random scenes for the synthetic renderer: layout, objects, textures, light, camera and object motion.

A scene is either a closed room (floor, ceiling, four walls) or open ground under a sky dome, so that
every camera ray hits a surface and depth is finite everywhere. 3-8 boxes, spheres, ellipsoids and
cylinders stand on the floor or float; 1-2 of them move on their own. The camera follows a smooth
random path (sums of slow sinusoids, so speed stays moderate however long the video) and looks roughly
into the scene. Everything is drawn from one ``numpy.random.Generator``, so a seed fixes the scene.

Two options isolate the motions a video model must tell apart (``CAMERA_MOTIONS``, ``OBJECT_MOTIONS``): the
camera may instead move straight ahead at constant speed with a fixed orientation (``"dolly"``, like a car's
camera), or turn about its own centre without moving (``"rotate"``); the moving objects may instead move towards
and away from the camera (``"depth"``), or all objects may stand still (``"static"``).

World coordinates: metres, y up. Camera axes (as for the normals): x right, y up, z towards the viewer,
so the camera looks along its local ``-z``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bufferanytime.synthetic.geometry import Box, Cylinder, Dome, Ellipsoid, Plane, Shape, lowest_point
from bufferanytime.synthetic.textures import Texture, TextureBank, build_pyramid, periodic_noise

CAMERA_CLEARANCE = 0.35  # metres kept between the camera centre and any object's bounding sphere
WALL_MARGIN = 0.5  # metres kept between the camera path and the room's walls, floor and ceiling
CAMERA_MOTIONS = ("wander", "dolly", "rotate")  # smooth random path; straight ahead; turning on the spot
OBJECT_MOTIONS = ("wander", "depth", "static")  # 1-2 objects wander; they move along the line of sight; none moves
ALONG_SIGHT = OBJECT_MOTIONS[1]  # objects moving to and fro along the line of sight
DOLLY_SPEED = {"room": (0.04, 0.1), "outdoor": (0.15, 0.4)}  # metres per frame, drawn uniformly
DOLLY_STOP = 1.0  # metres the dolly keeps from the end of its box (the far wall)
ROTATE_SPEED_DEG = (0.5, 2.0)  # yaw per frame, degrees, drawn uniformly (random sign)
DEPTH_MOTION_SPEED = (0.03, 0.08)  # metres per frame along the line of sight, of an object moving in depth


@dataclass
class SceneObject:
    """A posed, textured primitive. ``rotations`` (T, 3, 3) and ``translations`` (T, 3) map local to world."""

    name: str
    shape: Shape
    texture: Texture
    rotations: np.ndarray
    translations: np.ndarray
    uv_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    emissive: bool = False  # the sky: coloured by its texture only, not lit
    casts_shadow: bool = True
    moving: bool = False


@dataclass
class Scene:
    kind: str  # "room" or "outdoor"
    objects: list[SceneObject]
    intrinsics: dict[str, float]
    cam_to_world: np.ndarray  # (T, 4, 4), camera axes x right, y up, z backwards
    light_dir: np.ndarray  # (3,) unit vector towards the light, world coordinates
    light_intensity: float
    ambient: float
    haze_color: np.ndarray  # colour the sky fades to at the horizon


def rotation_about(axis: np.ndarray, angle: float | np.ndarray) -> np.ndarray:
    """Rodrigues rotation(s) about a unit ``axis``; ``angle`` scalar -> (3, 3), array (T,) -> (T, 3, 3)."""
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.asarray(angle, np.float64)[..., None, None]
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation (from a random unit quaternion)."""
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def frame_from_normal(normal: np.ndarray, tangent: np.ndarray) -> np.ndarray:
    """Rotation whose local y axis is ``normal`` and local x axis is ``tangent`` (made orthogonal)."""
    n = np.asarray(normal, np.float64) / np.linalg.norm(normal)
    t = np.asarray(tangent, np.float64) - np.dot(tangent, n) * n
    t /= np.linalg.norm(t)
    return np.stack([t, n, np.cross(t, n)], axis=1)


def smooth_path(
    rng: np.random.Generator, num_frames: int, speed: np.ndarray, periods: tuple[float, float] = (40.0, 160.0)
) -> np.ndarray:
    """Zero-mean smooth offsets ``(T, D)``: per axis, a sum of 3 sinusoids of random period and phase.

    Amplitudes are set so that each term's peak speed is ``speed / 3`` (units per frame), so the motion
    per frame is bounded by ``speed`` whatever the length of the video, and positions stay bounded.
    """
    speed = np.asarray(speed, np.float64)
    t = np.arange(num_frames, dtype=np.float64)[:, None]
    out = np.zeros((num_frames, speed.shape[0]))
    for _ in range(3):
        period = rng.uniform(*periods, size=speed.shape)
        phase = rng.uniform(0, 2 * np.pi, size=speed.shape)
        amplitude = speed / 3 * period / (2 * np.pi) * rng.uniform(0.5, 1.0, size=speed.shape)
        out += amplitude * np.sin(2 * np.pi * t / period + phase)
    return out


def _fit_path(center: np.ndarray, offsets: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Shrink ``offsets`` per axis so that ``center + offsets`` stays within ``[low, high]``."""
    center = np.clip(center, low, high)
    room = np.minimum(center - low, high - center)
    reach = np.abs(offsets).max(axis=0)
    scale = np.minimum(1.0, room / np.maximum(reach, 1e-12))
    return center + offsets * scale


def look_at(eye: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """Camera-to-world 4x4 for a camera at ``eye`` looking at ``target`` (world y up), rolled by ``roll``."""
    forward = target - eye
    forward /= np.linalg.norm(forward)
    z = -forward
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z], axis=1) @ rotation_about(np.array([0.0, 0.0, 1.0]), roll)
    pose = np.eye(4)
    pose[:3, :3] = rot
    pose[:3, 3] = eye
    return pose


def _static(num_frames: int, rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.broadcast_to(rotation, (num_frames, 3, 3)).copy(),
        np.broadcast_to(np.asarray(translation, np.float64), (num_frames, 3)).copy(),
    )


def _sky_texture(rng: np.random.Generator) -> tuple[Texture, np.ndarray]:
    """Cloudy sky colours and the matching horizon haze colour."""
    palettes = [
        (np.array([0.35, 0.55, 0.9]), np.array([0.97, 0.97, 1.0]), np.array([0.8, 0.87, 0.95])),  # blue
        (np.array([0.6, 0.63, 0.68]), np.array([0.85, 0.86, 0.88]), np.array([0.8, 0.8, 0.82])),  # overcast
        (np.array([0.45, 0.45, 0.75]), np.array([1.0, 0.75, 0.55]), np.array([0.98, 0.8, 0.65])),  # dusk
    ]
    sky, cloud, haze = palettes[rng.integers(len(palettes))]
    sky = np.clip(sky + rng.uniform(-0.05, 0.05, 3), 0, 1)
    noise = periodic_noise(rng, 256, beta=rng.uniform(1.3, 1.8), min_wavelength=3.0)
    cover = rng.uniform(0.35, 0.75)
    amount = np.clip((noise - cover) / 0.2, 0.0, 1.0)[..., None]
    image = (sky * (1 - amount) + cloud * amount).astype(np.float32)
    return Texture(levels=build_pyramid(image), period=float(rng.uniform(40.0, 120.0))), haze


def _random_shape(rng: np.random.Generator, scale: float) -> tuple[str, Shape]:
    kind = ["box", "box", "sphere", "ellipsoid", "cylinder"][rng.integers(5)]
    if kind == "box":
        return kind, Box(half=rng.uniform(0.1, 0.6, 3) * scale)
    if kind == "sphere":
        return kind, Ellipsoid(axes=np.full(3, rng.uniform(0.15, 0.55) * scale))
    if kind == "ellipsoid":
        return kind, Ellipsoid(axes=rng.uniform(0.12, 0.6, 3) * scale)
    return kind, Cylinder(r=float(rng.uniform(0.1, 0.45) * scale), half_height=float(rng.uniform(0.1, 0.7) * scale))


def _random_view_params(rng: np.random.Generator, size: tuple[int, int]) -> dict[str, float]:
    height, width = size
    hfov = np.deg2rad(rng.uniform(50.0, 75.0))
    f = (width / 2) / np.tan(hfov / 2)
    return {"fx": float(f), "fy": float(f), "cx": width / 2, "cy": height / 2}


@dataclass
class _Layout:
    """The static part of a scene and what the camera path, the light and the placed objects depend on."""

    kind: str  # "room" or "outdoor"
    objects: list[SceneObject]
    low: np.ndarray  # the box the camera path stays in
    high: np.ndarray
    eye0: np.ndarray  # where the camera starts and what it looks at
    target0: np.ndarray
    max_dist: float  # objects stand at most this far from the middle frame's camera
    elevation: float  # of the light, radians
    light_intensity: float
    ambient: float
    bounds: tuple[np.ndarray, np.ndarray] | None  # the room's walls, which objects keep clear of
    scale: float  # of the objects
    haze: np.ndarray


def sample_scene(
    rng: np.random.Generator,
    num_frames: int,
    size: tuple[int, int],
    bank: TextureBank,
    camera: str = "wander",
    objects: str = "wander",
) -> Scene:
    """Draw a complete random scene (see the module docstring) for a video of ``num_frames`` frames.

    ``rng`` draws the layout, light and motion; ``bank`` draws the textures from its own stream. ``camera`` is one
    of ``CAMERA_MOTIONS`` and ``objects`` one of ``OBJECT_MOTIONS``; the defaults draw exactly what they always did.
    """
    intrinsics = _random_view_params(rng, size)
    layout = _room(rng, num_frames, bank) if rng.random() < 0.55 else _outdoor(rng, num_frames, bank)
    if camera == "dolly":
        eyes, cam_to_world = _dolly_path(rng, num_frames, layout)
    elif camera == "rotate":
        eyes, cam_to_world = _rotate_path(rng, num_frames, layout)
    else:
        eyes, cam_to_world = _camera_path(rng, num_frames, layout)
    azimuth = rng.uniform(0, 2 * np.pi)
    elevation = layout.elevation
    light_dir = np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)])
    placed = _place_objects(
        rng, num_frames, intrinsics, size, cam_to_world, eyes, layout.max_dist, layout.bounds, layout.scale, bank,
        objects,
    )
    return Scene(
        kind=layout.kind,
        objects=layout.objects + placed,
        intrinsics=intrinsics,
        cam_to_world=cam_to_world,
        light_dir=light_dir,
        light_intensity=float(layout.light_intensity),
        ambient=float(layout.ambient),
        haze_color=np.asarray(layout.haze, np.float64),
    )


def _room_planes(
    bank: TextureBank, width: float, depth: float, height: float
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, Texture]]:
    """Floor, ceiling and four walls as (name, normal, tangent, origin, texture); one or two walls differ."""
    floor_tex = bank.draw((0.6, 2.5))
    wall_tex = bank.draw((1.0, 3.0))
    ceiling_tex = bank.draw((1.5, 4.0), patterns=("noise", "gradient"))
    planes = [
        ("floor", np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0]), np.zeros(3), floor_tex),
        ("ceiling", np.array([0.0, -1.0, 0.0]), np.array([1.0, 0.0, 0.0]), np.array([0, height, 0]), ceiling_tex),
        ("wall", np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([-width / 2, 0, 0]), wall_tex),
        ("wall", np.array([-1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([width / 2, 0, 0]), wall_tex),
        ("wall", np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), np.array([0, 0, -depth / 2]), wall_tex),
        ("wall", np.array([0.0, 0.0, -1.0]), np.array([1.0, 0.0, 0.0]), np.array([0, 0, depth / 2]), wall_tex),
    ]
    # a different texture on one or two walls, as rooms often have
    for i in bank.rng.choice(np.arange(2, 6), size=int(bank.rng.integers(0, 3)), replace=False):
        planes[i] = (*planes[i][:4], bank.draw((1.0, 3.0)))
    return planes


def _room(rng: np.random.Generator, num_frames: int, bank: TextureBank) -> _Layout:
    """A closed room, the camera inside it near one end, looking towards the other."""
    width, depth, height = rng.uniform(4.0, 9.0), rng.uniform(5.0, 11.0), rng.uniform(2.5, 3.5)
    objects = []
    for name, normal, tangent, origin, tex in _room_planes(bank, width, depth, height):
        rot, trans = _static(num_frames, frame_from_normal(normal, tangent), origin)
        objects.append(SceneObject(name, Plane(), tex, rot, trans, uv_offset=rng.uniform(0, 10, 3), casts_shadow=False))
    eye0 = np.array([rng.uniform(-0.3, 0.3) * width / 2, rng.uniform(1.0, 1.9), depth / 2 - rng.uniform(1.0, 2.0)])
    target0 = np.array(
        [
            rng.uniform(-0.4, 0.4) * width / 2,
            rng.uniform(0.4, 1.4),
            # short rooms: keep the interval non-empty (the camera may start close to the far wall)
            rng.uniform(-depth / 2 + 1.0, max(-depth / 2 + 1.5, eye0[2] - 2.5)),
        ]
    )
    elevation = np.deg2rad(rng.uniform(35.0, 80.0))
    light_intensity, ambient = rng.uniform(0.45, 0.75), rng.uniform(0.35, 0.55)
    corner_low, corner_high = np.array([-width / 2, 0.0, -depth / 2]), np.array([width / 2, height, depth / 2])
    return _Layout(
        kind="room",
        objects=objects,
        low=corner_low + WALL_MARGIN,
        high=corner_high - WALL_MARGIN,
        eye0=eye0,
        target0=target0,
        max_dist=max(2.0, min(6.0, eye0[2] + depth / 2 - 0.8)),
        elevation=elevation,
        light_intensity=light_intensity,
        ambient=ambient,
        bounds=(corner_low, corner_high),
        scale=1.0,
        haze=np.ones(3),
    )


def _outdoor(rng: np.random.Generator, num_frames: int, bank: TextureBank) -> _Layout:
    """Open ground under a sky dome, the camera near its centre."""
    radius = rng.uniform(60.0, 150.0)
    ground_tex = bank.draw((1.0, 4.0))
    rot, trans = _static(num_frames, np.eye(3), np.zeros(3))
    ground = SceneObject("ground", Plane(), ground_tex, rot, trans, uv_offset=rng.uniform(0, 10, 3), casts_shadow=False)
    sky_tex, haze = _sky_texture(bank.rng)
    rot, trans = _static(num_frames, random_rotation(rng), np.zeros(3))
    sky = SceneObject("sky", Dome(r=float(radius)), sky_tex, rot, trans, emissive=True, casts_shadow=False)
    eye0 = np.array([0.0, rng.uniform(1.0, 3.0), 0.0])
    target0 = np.array([rng.uniform(-2.0, 2.0), rng.uniform(0.0, 1.0), -rng.uniform(5.0, 10.0)])
    elevation = np.deg2rad(rng.uniform(25.0, 70.0))
    light_intensity, ambient = rng.uniform(0.6, 0.85), rng.uniform(0.25, 0.45)
    return _Layout(
        kind="outdoor",
        objects=[ground, sky],
        low=np.array([-radius / 4, 0.6, -radius / 4]),
        high=np.array([radius / 4, 4.0, radius / 4]),
        eye0=eye0,
        target0=target0,
        max_dist=12.0,
        elevation=elevation,
        light_intensity=light_intensity,
        ambient=ambient,
        bounds=None,
        scale=rng.uniform(1.0, 2.0),
        haze=haze,
    )


def _camera_path(rng: np.random.Generator, num_frames: int, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """Eye positions ``(T, 3)`` and camera-to-world poses ``(T, 4, 4)``: the eye wanders slowly within the
    layout's box, and so does the point it looks at; the camera rolls a few degrees."""
    eye_speed = rng.uniform(0.05, 0.15) * rng.uniform(0.5, 1.0, 3)
    eyes = _fit_path(layout.eye0, smooth_path(rng, num_frames, eye_speed), layout.low, layout.high)
    targets = layout.target0 + smooth_path(rng, num_frames, rng.uniform(0.05, 0.2) * np.ones(3))
    rolls = np.deg2rad(rng.uniform(0.0, 4.0)) * np.sin(
        2 * np.pi * np.arange(num_frames) / rng.uniform(40.0, 160.0) + rng.uniform(0, 2 * np.pi)
    )
    cam_to_world = np.stack([look_at(eyes[k], targets[k], rolls[k]) for k in range(num_frames)])
    return eyes, cam_to_world


def _dolly_path(rng: np.random.Generator, num_frames: int, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """Straight ahead, level, at constant speed, with a fixed orientation (looking where it goes, tilted as the
    layout's first view): the camera of a car. The speed is lowered when the path would leave the layout's box."""
    view = layout.target0 - layout.eye0
    heading = np.array([view[0], 0.0, view[2]]) / np.hypot(view[0], view[2])
    low, high = layout.low, layout.high
    reach = [  # how far the eye may go along the heading, in x and in z
        ((high[a] if heading[a] > 0 else low[a]) - layout.eye0[a]) / heading[a] if abs(heading[a]) > 1e-9 else np.inf
        for a in (0, 2)
    ]
    room = max(0.0, min(reach) - DOLLY_STOP)
    speed = min(rng.uniform(*DOLLY_SPEED[layout.kind]), room / max(num_frames - 1, 1))
    eyes = layout.eye0 + speed * np.arange(num_frames)[:, None] * heading
    cam_to_world = np.stack([look_at(eye, eye + view, 0.0) for eye in eyes])
    return eyes, cam_to_world


def _rotate_path(rng: np.random.Generator, num_frames: int, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """Turning about the camera's own centre (it does not move): a steady yaw and a slow small tilt."""
    yaw = np.deg2rad(rng.uniform(*ROTATE_SPEED_DEG)) * rng.choice([-1.0, 1.0]) * np.arange(num_frames)
    tilt = np.deg2rad(rng.uniform(0.0, 5.0)) * np.sin(2 * np.pi * np.arange(num_frames) / rng.uniform(40.0, 160.0))
    view = layout.target0 - layout.eye0
    eyes = np.broadcast_to(layout.eye0, (num_frames, 3)).copy()
    cam_to_world = []
    for k in range(num_frames):
        turned = rotation_about(np.array([0.0, 1.0, 0.0]), yaw[k]) @ view
        side = np.cross(turned, [0.0, 1.0, 0.0])
        cam_to_world.append(look_at(eyes[k], eyes[k] + rotation_about(side, tilt[k]) @ turned, 0.0))
    return eyes, np.stack(cam_to_world)


def _object_path(
    rng: np.random.Generator, T: int, center: np.ndarray, eye: np.ndarray, floating: bool, objects: str
) -> np.ndarray:
    """Positions ``(T, 3)`` of a moving object: wandering, or (``objects`` ALONG_SIGHT) to and fro along the
    horizontal line from the middle frame's camera ``eye`` through its ``center``."""
    if objects != ALONG_SIGHT:
        speed = rng.uniform(0.01, 0.04) * np.array([1.0, 1.0 if floating else 0.0, 1.0])
        return center + smooth_path(rng, T, speed, periods=(30.0, 100.0))
    line = (center - eye) * np.array([1.0, 0.0, 1.0])
    line /= np.linalg.norm(line)
    along = smooth_path(rng, T, np.array([rng.uniform(*DEPTH_MOTION_SPEED)]), periods=(30.0, 100.0))
    return center + along * line


def _place_objects(
    rng: np.random.Generator,
    T: int,
    intrinsics: dict[str, float],
    size: tuple[int, int],
    cam_to_world: np.ndarray,
    eyes: np.ndarray,
    max_dist: float,
    bounds: tuple[np.ndarray, np.ndarray] | None,
    scale: float,
    bank: TextureBank,
    objects: str = "wander",
) -> list[SceneObject]:
    """3-8 objects in view of the middle frame, clear of the camera path, the walls and each other; 1-2 of them
    move (none with ``objects == "static"``)."""
    height, width = size
    reference = cam_to_world[T // 2]
    num_objects = int(rng.integers(3, 9))
    num_moving = int(rng.integers(1, 3)) if objects != "static" else 0
    placed: list[SceneObject] = []
    for index in range(num_objects):
        moving = index < num_moving
        for _attempt in range(60):
            name, shape = _random_shape(rng, scale)
            floating = rng.random() < 0.2
            if floating or rng.random() < 0.35:
                rot0 = random_rotation(rng)
            else:
                rot0 = rotation_about(np.array([0.0, 1.0, 0.0]), rng.uniform(0, 2 * np.pi))
                if isinstance(shape, Cylinder) and rng.random() < 0.3:  # lying on its side
                    rot0 = rot0 @ rotation_about(np.array([1.0, 0.0, 0.0]), np.pi / 2)
            # a point on the floor seen by the middle frame's camera
            u = rng.uniform(0.1, 0.9) * width
            ray = reference[:3, :3] @ np.array([(u - intrinsics["cx"]) / intrinsics["fx"], 0.0, -1.0])
            heading = np.array([ray[0], 0.0, ray[2]]) / np.hypot(ray[0], ray[2])
            center = reference[:3, 3] * np.array([1.0, 0.0, 1.0]) + heading * rng.uniform(1.5, max_dist)
            center[1] = lowest_point(shape, rot0) + (rng.uniform(0.2, 1.2) if floating else 0.0)
            if moving:
                translations = _object_path(rng, T, center, reference[:3, 3], floating, objects)
                axis = random_rotation(rng)[:, 0] if floating else np.array([0.0, 1.0, 0.0])
                omega = np.deg2rad(rng.uniform(0.5, 3.0)) * rng.choice([-1.0, 1.0])
                rotations = rotation_about(axis, omega * np.arange(T)) @ rot0
            else:
                rotations, translations = _static(T, rot0, center)
            if not _fits(shape.radius, translations, eyes, bounds, placed):
                continue
            texture = bank.draw((0.3, 1.5))
            placed.append(
                SceneObject(
                    name, shape, texture, rotations, translations, uv_offset=rng.uniform(0, 10, 3), moving=moving
                )
            )
            break
    return placed


def _fits(
    radius: float,
    translations: np.ndarray,
    eyes: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray] | None,
    placed: list[SceneObject],
) -> bool:
    """Whether an object's bounding sphere keeps clear of the camera, the room and the placed objects."""
    if np.min(np.linalg.norm(translations - eyes, axis=1)) < radius + CAMERA_CLEARANCE:
        return False
    if bounds is not None:
        low, high = bounds
        xz = [0, 2]
        if np.any(translations[:, xz] - radius < low[xz]) or np.any(translations[:, xz] + radius > high[xz]):
            return False
        if np.any(translations[:, 1] + radius > high[1]):
            return False
    for other in placed:
        gap = np.linalg.norm(translations - other.translations, axis=1)
        if np.min(gap) < 0.9 * (radius + other.shape.radius):
            return False
    return True
