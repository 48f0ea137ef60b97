"""bufferanytime: temporally consistent video depth and normals from single-image priors.

Conventions, used everywhere in the package:

- frames: ``(B, T, 3, H, W)`` float in [0, 1] (RGB);
- optical flow: ``(N, 2, H, W)`` in pixels, channel 0 = x (right), 1 = y (down); ``src(x)`` matches
  ``dst(x + flow(x))``;
- depth outputs: relative disparity ``(B, T, H, W)``, larger = nearer, unknown scale and shift;
- normals: unit vectors ``(B, T, 3, H, W)`` in camera coordinates, x right, y up, z towards the camera.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bufferanytime")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
