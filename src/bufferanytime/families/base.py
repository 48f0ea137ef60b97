"""What a prior family declares: one :class:`Family` object in each module of :mod:`bufferanytime.families`."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from bufferanytime.models.base import VideoModel
    from bufferanytime.tasks import Task


def import_object(reference: str) -> Any:
    """The object named by ``"package.module:Name"``, its module imported on first use."""
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Family:
    """Everything specific to one family of image priors, declared in the family's own module.

    - ``model_class``: the video model (prior + temporal blocks; where the blocks enter, the input-size rule
      and the normalisation are that class's ``__init__``, ``default_input_size`` and ``preprocess``);
    - ``tasks``: the buffers its checkpoints can produce (the first is the usual one; a checkpoint may serve another
      of them, e.g. a metric Depth Anything serves ``metric_depth``: ``model.task`` says which);
    - ``objective``: its training objective, ``"module:Class"`` (imported on use: training pulls in Accelerate);
    - ``graph``: its ONNX export graph, a module ``graph(model)`` with ``forward(frames (B,T,3,H,W)) -> buffers``
      and ``multiple(model)``, the side length every input must be a multiple of;
    - ``tiny_prior``: ``(path, seed) -> path``, a tiny random prior in the family's exact on-disk format (tests);
    - ``prior_trainers``: task name -> ``"module:function"`` training a small prior of this family on synthetic
      data (``bufferanytime train-prior``); only the families of the embedded models have them.
    """

    name: str
    title: str
    model_class: type[VideoModel]
    tasks: tuple[Task, ...]
    objective: str
    graph: type[nn.Module]
    tiny_prior: Callable[[Path, int], Path]
    prior_trainers: dict[str, str] = field(default_factory=dict)
    source: str = ""  # where the checkpoints come from, in a few words (``bufferanytime models``)

    @property
    def kind(self) -> str:
        """The model kind (the sub-command, ``depth`` or ``normal``) of this family's video models."""
        return self.tasks[0].kind

    def produces(self, kind: str) -> bool:
        """Whether this family's models serve the model kind (or task) ``kind``."""
        return any(kind in (task.kind, task.name) for task in self.tasks)

    def objective_class(self) -> type:
        """The training objective (imported now)."""
        return import_object(self.objective)

    def make_tiny_prior(self, path: str | Path, seed: int = 0) -> Path:
        """Write this family's tiny random prior to ``path`` and return the path."""
        return Path(self.tiny_prior(Path(path), seed))


def fan_in_init(modules: Iterable[nn.Module]) -> None:
    """Fan-in scaled weights and zero biases for the convolutions among ``modules``, in place: a tiny random
    prior's decoder then keeps its activations O(1), as a real prior's do (the libraries' default initialisation
    makes a random DPT-style decoder's output constant to about 1e-6, hiding a wrong resize, colour or frame order
    from the tests). Draws from torch's global generator: seed it first."""
    from torch import nn

    for module in modules:
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            fan_in = module.weight[0].numel() if isinstance(module, nn.Conv2d) else module.weight[:, 0].numel()
            nn.init.normal_(module.weight, std=fan_in**-0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
