"""Tiny random-weight priors in the exact on-disk format of the real ones, for tests and benchmarks.

Like the test suites of transformers and diffusers, these build the real classes with tiny configs, so every
code path that loads a real checkpoint runs on them unchanged. Each prior family builds its own
(``FAMILY.tiny_prior`` in its module of :mod:`bufferanytime.families`); :func:`make_tiny_prior` picks one by
family or by model kind, and the builders of the embedded models' families are reachable here by name too.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

# Builders that live with their family, importable from here as before (imported on first use: each family
# module pulls in transformers or diffusers).
_FAMILY_BUILDERS = {
    "bufferanytime.families.depth_anything_v2": (
        "DEPTH_ANYTHING_V2_SIZES", "depth_anything_config", "make_informative", "make_sized_depth_prior",
        "make_tiny_depth_prior", "make_tiny_metric_prior", "metric_config", "tiny_depth_config"),
    "bufferanytime.families.marigold_e2e_normals": (
        "make_tiny_normal_prior", "normal_prior_components", "sd2_scheduler", "tiny_normal_components"),
}


def make_tiny_prior(name: str, path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random prior to ``path`` and return the path: of the family called ``name``, or of the first
    family of the model kind ``name`` ("depth": Depth Anything V2, "normal": Marigold-E2E-FT)."""
    from bufferanytime.families import FAMILIES, default_family, get_family

    family = get_family(name if name in FAMILIES else default_family(name))
    return family.make_tiny_prior(Path(path), seed)


def __getattr__(name: str) -> Any:
    for module, names in _FAMILY_BUILDERS.items():
        if name in names:
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
