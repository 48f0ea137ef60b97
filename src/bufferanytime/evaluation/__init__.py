"""Evaluation: temporal consistency (OPW), benchmark readers, and report folders of scored models.
Each task's accuracy metrics live with the task (:mod:`bufferanytime.tasks.metrics`), re-exported here.

- :func:`depth_metrics`: AbsRel, delta1, RMSE with the DepthCrafter benchmark protocol (one scale and shift per
  video, fitted in disparity); :func:`normal_metrics`: angular errors (DSINE's metrics).
- :func:`opw`: optical-flow based warping error between adjacent frames (exact definition in
  :mod:`bufferanytime.evaluation.consistency` and in this folder's README).
- :func:`load_sequences`: the synthetic layout and KITTI / ScanNet / Bonn / Sintel from their official folders.
- :func:`run_evaluation`: what ``bufferanytime eval`` runs: inference, metrics, ``report.json`` / ``report.md``
  and time-slice images.
"""

from bufferanytime.evaluation.consistency import SequenceFlows, estimate_flows, opw
from bufferanytime.evaluation.datasets import (
    DATASETS,
    EvalSequence,
    benchmark_sort,
    list_datasets,
    load_sequences,
    read_dpt,
    read_png_depth,
    write_dpt,
)
from bufferanytime.evaluation.runner import EvalConfig, ModelSpec, model_specs, run_evaluation
from bufferanytime.evaluation.slices import compose_slices, time_slice
from bufferanytime.tasks.metrics import (
    aligned_depth,
    angular_error,
    depth_metrics,
    fit_disparity_affine,
    normal_metrics,
)

__all__ = [
    "DATASETS",
    "EvalConfig",
    "EvalSequence",
    "ModelSpec",
    "SequenceFlows",
    "aligned_depth",
    "angular_error",
    "benchmark_sort",
    "compose_slices",
    "depth_metrics",
    "estimate_flows",
    "fit_disparity_affine",
    "list_datasets",
    "load_sequences",
    "model_specs",
    "normal_metrics",
    "opw",
    "read_dpt",
    "read_png_depth",
    "run_evaluation",
    "time_slice",
    "write_dpt",
]
