"""Batch runs of ``bufferanytime depth|normal --engine local|ray``: many inputs, one model load per worker.

- :mod:`~bufferanytime.batch.options`: the ``--engine`` flags and their checks (no torch, no Ray);
- :mod:`~bufferanytime.batch.inputs`: paths, lists, globs and Parquet/CSV/JSONL manifests of paths;
- :mod:`~bufferanytime.batch.manifest`: the run manifest ``OUT/KIND_manifest.jsonl`` and the hashes that make a
  rerun skip what is done;
- :mod:`~bufferanytime.batch.work`: one input's job and the worker that runs it (model loaded once);
- :mod:`~bufferanytime.batch.quality`: per-video figures needing no ground truth (OPW with DIS, scale jitter);
- :mod:`~bufferanytime.batch.local` and :mod:`~bufferanytime.batch.ray_engine`: the engines;
- :mod:`~bufferanytime.batch.run`: the driver.

Nothing here imports Ray but ``ray_engine``, which only ``--engine ray`` loads.
"""
