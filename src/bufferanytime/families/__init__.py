"""Prior families: one module per family of image priors, owning what differs between them.

A family module (e.g. :mod:`~bufferanytime.families.depth_anything_v2`) holds its video model (where the temporal
blocks enter the library's model, its input-size rule and normalisation), its ONNX export graph and its tiny random
test prior in the exact on-disk format, and declares them, its training objective and the tasks it produces in one
:class:`~bufferanytime.families.base.Family` object named ``FAMILY``. What a buffer *is* (files, alignment, metrics)
stays with the tasks (:mod:`bufferanytime.tasks`).

Each family is registered below in ``FAMILIES`` by one line naming its module, its model kind and how its
checkpoints say what they are: transformers' ``model_type`` in ``config.json``, or diffusers' ``_class_name`` in
``model_index.json``. Where two families share that name (prs-eth's Marigold normals v1-1 and Marigold-E2E-FT are
both ``MarigoldNormalsPipeline``), a registration also names ``markers``: key/value pairs the same file must hold
too. Among the registrations claiming a checkpoint the one with the most markers wins (the most specific), the
first registered on a tie. The family of a checkpoint is read from those (:func:`family_of`), so loading a directory
needs no kind; a saved video model records its family in its own ``config.json``. A family module is imported only
when a checkpoint of it is loaded (``bufferanytime depth`` never imports diffusers).

API::

    from bufferanytime.families import FAMILIES, get_family, family_of, list_families
    family = get_family("depth-anything-v2")     # the Family object; InputError listing the known ones
    family_of(Path("some/checkpoint"))           # from config.json / model_index.json
    family.model_class, family.tasks, family.graph, family.make_tiny_prior(path), family.objective_class()
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from bufferanytime.errors import InputError
from bufferanytime.families.base import Family
from bufferanytime.models.base import CONFIG_NAME, FAMILY_KEY, MODEL_KEY
from bufferanytime.registry import Registry

MODEL_INDEX_NAME = "model_index.json"  # diffusers pipelines


@dataclass(frozen=True)
class Registration:
    """Where a family lives and what its checkpoints look like, known without importing its module."""

    module: str  # in bufferanytime.families
    kind: str  # the model kind of its video models (the first registered family of a kind loads old saved models)
    model_types: tuple[str, ...] = ()  # transformers config.json "model_type"
    class_names: tuple[str, ...] = ()  # diffusers model_index.json "_class_name"
    markers: tuple[tuple[str, object], ...] = ()  # (key, value) the same file must also hold; the most markers win

    def claims(self) -> str:
        keys = [f"model_type {t}" for t in self.model_types] + [f"_class_name {c}" for c in self.class_names]
        marked = "".join(f" with {key} {value!r}" for key, value in self.markers)
        return ", ".join(key + marked for key in keys)

    def matches(self, config: dict) -> bool:
        """Whether a checkpoint's config (``model_index.json`` or ``config.json``) holds every marker."""
        return all(key in config and config[key] == value for key, value in self.markers)


FAMILIES: Registry[Registration] = Registry("prior family")
FAMILIES.register("depth-anything-v2", Registration("depth_anything_v2", "depth", model_types=("depth_anything",)))
FAMILIES.register("marigold-e2e-normals", Registration("marigold_e2e_normals", "normal",
                                                       class_names=("MarigoldNormalsPipeline",)))
FAMILIES.register("dpt", Registration("dpt", "depth", model_types=("dpt",)))
FAMILIES.register("marigold-depth", Registration("marigold_depth", "depth", class_names=("MarigoldDepthPipeline",)))
FAMILIES.register("marigold-normals", Registration("marigold_normals", "normal",
                                                   class_names=("MarigoldNormalsPipeline",),
                                                   markers=(("default_denoising_steps", 4),)))
FAMILIES.register("zoedepth", Registration("zoedepth", "depth", model_types=("zoedepth",)))
FAMILIES.register("depth-pro", Registration("depth_pro", "depth", model_types=("depth_pro",)))


def list_families() -> list[str]:
    """The registered family names, in registration order."""
    return FAMILIES.list()


def get_family(name: str) -> Family:
    """The family called ``name`` (its module imported now); InputError listing the known ones."""
    family = importlib.import_module(f"{__name__}.{FAMILIES.get(name).module}").FAMILY
    if family.name != name:
        raise ValueError(f"family module {FAMILIES.get(name).module} declares {family.name!r}, registered as {name!r}")
    return family


def default_family(kind: str) -> str:
    """The first registered family of model kind ``kind``: the family of a saved video model that predates the
    ``family`` key of config.json (every such model is of that family)."""
    for name in FAMILIES:
        if FAMILIES.get(name).kind == kind:
            return name
    raise InputError(f"no prior family makes {kind} models; known families: {known()}")


def known() -> str:
    """The known families and the checkpoints each claims, for messages."""
    return "; ".join(f"{name} ({FAMILIES.get(name).claims()})" for name in FAMILIES)


def _read_json(file: Path) -> dict | None:
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{file}: cannot read the model config (not valid JSON)") from exc
    return data if isinstance(data, dict) else {}


def family_name_of(directory: Path) -> str:
    """The family of a checkpoint directory: a saved video model's ``family`` (its kind's first family when it has
    none), diffusers' ``_class_name``, or transformers' ``model_type``; InputError listing the known families."""
    config = _read_json(directory / CONFIG_NAME)
    if config is not None and MODEL_KEY in config:
        name = config.get(FAMILY_KEY) or default_family(str(config[MODEL_KEY]))
        if name not in FAMILIES:
            raise InputError(f"{directory / CONFIG_NAME}: a video model of unknown prior family {name!r}; known "
                             f"families: {known()}")
        return name
    index = _read_json(directory / MODEL_INDEX_NAME)
    if index is not None:
        return _match(directory / MODEL_INDEX_NAME, "_class_name", index, "class_names")
    if config is not None:
        return _match(directory / CONFIG_NAME, "model_type", config, "model_types")
    raise InputError(f"{directory}: not a model directory (no {CONFIG_NAME} or {MODEL_INDEX_NAME}); known "
                     f"families: {known()}")


def _match(file: Path, key: str, config: dict, field: str) -> str:
    """The family claiming a checkpoint whose config ``file`` says ``config[key]``: of those listing that value in
    ``field`` and whose markers the config holds, the one with the most markers (the first registered on a tie)."""
    value = config.get(key)
    claiming = [name for name in FAMILIES
                if value in getattr(FAMILIES.get(name), field) and FAMILIES.get(name).matches(config)]
    if not claiming:
        raise InputError(f"{file}: a checkpoint of unknown prior family ({key} {value!r}); known families: {known()}")
    return max(claiming, key=lambda name: len(FAMILIES.get(name).markers))  # max keeps the first of equals


def prior_trainer(task: str):
    """The function training a small prior for ``task`` on synthetic data (``bufferanytime train-prior TASK``),
    from the family that declares one; InputError naming the tasks that have one."""
    from bufferanytime.families.base import import_object

    trainers = {name: ref for family in map(get_family, FAMILIES) for name, ref in family.prior_trainers.items()}
    if task not in trainers:
        raise InputError(f"no prior trainer for {task!r}; choose one of {', '.join(trainers)}")
    return import_object(trainers[task])


def prior_trainer_tasks() -> list[str]:
    """The tasks some family can train a small prior for (every family module is imported)."""
    return [name for family in map(get_family, FAMILIES) for name in family.prior_trainers]


def family_of(directory: str | Path) -> Family:
    """The :class:`Family` of a checkpoint directory (see :func:`family_name_of`)."""
    return get_family(family_name_of(Path(directory)))


__all__ = ["FAMILIES", "Family", "Registration", "default_family", "family_name_of", "family_of", "get_family",
           "list_families", "prior_trainer", "prior_trainer_tasks"]
