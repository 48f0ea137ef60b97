"""Tasks: one object per kind of buffer (depth, normals), owning everything that differs between kinds.
Below inference, evaluation and training; it depends only on io and constants.

API::

    from bufferanytime.tasks import DEPTH, NORMAL, get_task, list_tasks
    task = get_task("depth")             # the object DEPTH; InputError for an unknown name
    task.name, task.channels             # "depth", 1 | "normal", 3
    task.files                           # OutputNames: npz, key (array in the npz), vis, png16, exr, meta
    task.frame_to_disk(t) / task.frame_from_disk(a)   # (C, H, W) tensor <-> (H, W) | (H, W, C) float32 array
    task.align_window(new, previous)     # sliding windows: depth fits scale + shift, normals pass
    task.after_blend(frames)             # after blending windows (T, C, H, W): normals are renormalised
    task.resize(frame, (H, W))           # a disk-layout frame, bilinear (normals renormalised)
    task.opw_normalization(frames)       # (t, s): OPW compares (frames - t) / s; depth median / mean |D - t|
    task.vis_range(frames), task.to_rgb(frame, value_range, invalid=None), task.vis_info(value_range)
    task.write_png16(frames, folder), task.exr_planes(frame)
    task.columns, task.title, task.definitions, task.opw_note           # the evaluation report
    task.has_ground_truth(seq), task.read_ground_truth(seq, i), task.gt_dtype, task.depth_cap(dataset)
    task.score(pred, gt, dataset)        # accuracy metrics at the ground truth's size; task.headline(metrics)
    task.gt_slice_rgb(slice, dataset) -> (rgb, value_range); task.pred_slice_rgb(slice, metrics, value_range)

A model's task is ``model.task`` (a metric Depth Anything prior serves METRIC_DEPTH, ``metric_depth.npz`` with
the array ``depth`` in metres; its kind is still ``depth``). A new kind of buffer is one new :class:`Task`
subclass in this folder, registered in ``TASKS`` (the package's :class:`~bufferanytime.registry.Registry`): it
sets ``name``, ``array_key``, ``channels``, ``gt_dtype``, ``title``, ``exr_channels``, ``columns``,
``definitions``, ``opw_note`` and implements ``frame_to_disk``, ``frame_from_disk``, ``to_rgb``, ``vis_info``,
``write_png16``, ``headline``, ``has_ground_truth``, ``read_ground_truth``, ``score`` and ``gt_slice_rgb``; the
other methods have defaults that do nothing (no alignment, no renormalisation, no OPW normalisation, no colour
range). Code elsewhere asks the task and never compares its name.
"""

from bufferanytime.registry import Registry
from bufferanytime.tasks.base import Column, OutputNames, Task
from bufferanytime.tasks.depth import DepthTask
from bufferanytime.tasks.metric_depth import MetricDepthTask
from bufferanytime.tasks.normal import NormalTask

DEPTH = DepthTask()
NORMAL = NormalTask()
METRIC_DEPTH = MetricDepthTask()
TASKS: Registry[Task] = Registry("task")
for _task in (DEPTH, NORMAL, METRIC_DEPTH):
    TASKS.register(_task.name, _task)


def list_tasks(every: bool = False) -> list[str]:
    """Names of the model kinds (the sub-commands ``depth``, ``normal``: tasks that are their own kind), in
    registration order; ``every=True`` adds the tasks a kind's models may also serve (``metric_depth``)."""
    return [name for name in TASKS.list() if every or TASKS.get(name).kind == name]


def get_task(name: str | Task) -> Task:
    """The task called ``name`` (a task is returned as it is); InputError naming the choices for an unknown name."""
    return name if isinstance(name, Task) else TASKS.get(name)


__all__ = ["DEPTH", "METRIC_DEPTH", "NORMAL", "TASKS", "Column", "DepthTask", "MetricDepthTask", "NormalTask",
           "OutputNames", "Task", "get_task",
           "list_tasks"]
