"""Make ``docs/method.png``, the README's picture: input | per-frame prior | video model, for depth and normals.

A held-out synthetic clip (a seed never used to train or select the embedded models, with light flicker) is run
through the embedded ``tiny-synthetic`` models twice: the image prior frame by frame, and the video model. Each
row shows the first frame, with the sliced column marked, then the time slice of the input, the prior and the
video model (that column of every frame, left to right in time): flicker shows there as vertical stripes. CPU
only, under a minute.

    .venv/bin/python scripts/make_readme_figure.py [-o docs/method.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 777_777  # held out, as in `bufferanytime demo`
FRAMES, SIZE = 32, (168, 224)
GAP = 6


def predictions(task_name: str, frames: np.ndarray) -> dict[str, np.ndarray]:
    """The per-frame prior's and the video model's outputs for ``frames`` (T, H, W, 3) uint8."""
    from bufferanytime.inference import InferenceSettings, predict_frames
    from bufferanytime.models import load_model

    preds = {}
    for label, per_frame in (("per-frame prior", True), ("video model", False)):
        model = load_model(task_name, "tiny-synthetic", per_frame=per_frame)
        preds[label] = np.stack(list(predict_frames(model, iter(frames), InferenceSettings(device="cpu"))))
    return preds


def task_row(task_name: str, frames: np.ndarray) -> np.ndarray:
    """The first frame, then the time slices of input, prior and video model, as one RGB image."""
    from bufferanytime.app.work import column_ranges
    from bufferanytime.evaluation.slices import column_index, compose_slices, time_slice
    from bufferanytime.tasks import get_task

    task = get_task(task_name)
    preds = predictions(task_name, frames)
    ranges = column_ranges(task, preds)
    x = column_index(frames.shape[2])
    slices = [("input over time", time_slice(frames, x))]
    slices += [(f"{label}", task.to_rgb(time_slice(p, x), ranges[label])) for label, p in preds.items()]
    return compose_slices(frames[0], x, slices)


def stack(images: list[np.ndarray], axis: int) -> np.ndarray:
    """Images joined along ``axis`` (0 rows, 1 columns) with a white gap, padded white to a common size."""
    other = 1 - axis
    size = max(im.shape[other] for im in images)
    padded = []
    for i, im in enumerate(images):
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[other] = (0, size - im.shape[other])
        im = np.pad(im, pad, constant_values=255)
        if i:
            gap_shape = [0, 0, 3]
            gap_shape[axis], gap_shape[other] = GAP, size
            padded.append(np.full(gap_shape, 255, np.uint8))
        padded.append(im)
    return np.concatenate(padded, axis=axis)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/method.png"))
    args = parser.parse_args()
    from bufferanytime.io.outputs import write_image
    from bufferanytime.synthetic import render_video

    video = render_video(SEED, FRAMES, SIZE, flicker=0.3, exposure=0.1, noise=0.01)
    frames = np.asarray(video.rgb)
    figure = stack([task_row("depth", frames), task_row("normal", frames)], axis=0)
    write_image(args.output, figure)
    print(f"wrote {args.output} ({figure.shape[1]}x{figure.shape[0]}, {args.output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
