"""``bufferanytime depth CLIP --adapt BUDGET`` on real clips: OPW of the adapted prediction against the shipped one.

For every clip (a video or a frame folder; nothing is copied), two runs of the command line, each in a process of
its own: ``depth CLIP -o W/shipped`` (the embedded video model) and ``depth CLIP --adapt BUDGET -o W/adapted``
(adapted on the clip itself, then predicting it). Both predictions are scored as the batch manifest's quality
figure is (:func:`bufferanytime.batch.quality.quality_figures`: OPW with DIS flow on the input frames, at a long
side of at most 160 pixels). Printed per clip: OPW shipped and adapted, their ratio, the adaptation's result and
steps run, the wall time of the ``--adapt`` command against its budget and the peak memory (RSS) of both
commands; the whole report goes to ``W/report.json``.

    python benchmarks/adapt_real_clips.py CLIP... [--work DIR] [--budget 5m]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import run_python  # noqa: E402


def command(clip: Path, out: Path, budget: str | None) -> tuple[float, int]:
    """Run ``bufferanytime depth`` on ``clip`` (with ``--adapt budget`` when given); wall seconds and peak RSS
    (kB)."""
    args = ["-m", "bufferanytime", "depth", str(clip), "-o", str(out), "--save", "npz", "-q"]
    if budget is not None:
        args += ["--adapt", budget]
    began = time.perf_counter()
    _, rss = run_python(args, check=True, capture_output=True, text=True)
    return time.perf_counter() - began, rss


def figure(clip: Path, out: Path) -> tuple[float, dict]:
    """OPW (DIS) of the prediction written under ``out`` for ``clip``, and its meta file."""
    from bufferanytime.batch.quality import quality_figures
    from bufferanytime.io.video import open_video

    folder = next(p.parent for p in out.rglob("depth.meta.json"))
    meta = json.loads((folder / "depth.meta.json").read_text())
    array = meta["array"]
    figures = quality_figures(open_video(clip), folder / array["file"], array["key"], depth=True)
    return float(figures["opw_dis"]), meta


def one_clip(clip: Path, work: Path, budget: str) -> dict:
    """Both runs on one clip and their figures (a clip ``--adapt`` refuses: its error line)."""
    shipped_s, shipped_rss = command(clip, work / "shipped", None)
    try:
        adapted_s, adapted_rss = command(clip, work / "adapted", budget)
    except subprocess.CalledProcessError as failed:
        return {"clip": str(clip), "refused": failed.stderr.strip().splitlines()[-1]}
    shipped, _ = figure(clip, work / "shipped")
    adapted, meta = figure(clip, work / "adapted")
    info = meta["model"]["adapt"]
    return {"clip": str(clip), "opw_shipped": shipped, "opw_adapted": adapted, "ratio": adapted / shipped,
            "result": info["result"], "reason": info["reason"], "steps": info["steps"],
            "held_out_opw": [info["opw_before"], info["opw_after"]], "adapt_command_s": adapted_s,
            "depth_command_s": shipped_s, "adapt_rss_mb": adapted_rss / 1024, "depth_rss_mb": shipped_rss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--work", type=Path, default=None, help="folder for the outputs (default: temporary)")
    parser.add_argument("--budget", default="5m")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="adapt-real-"))
    rows = []
    for clip in args.clips:
        row = one_clip(clip, work / clip.name, args.budget)
        rows.append(row)
        if "refused" in row:
            print(f"{clip.name}: {row['refused']}", flush=True)
            continue
        print(f"{clip.name}: OPW {row['opw_shipped']:.4g} -> {row['opw_adapted']:.4g} ({row['ratio']:.2f}x), "
              f"{row['result']}, {row['steps']} steps, --adapt command {row['adapt_command_s']:.0f} s, peak "
              f"{row['adapt_rss_mb']:.0f} MB vs {row['depth_rss_mb']:.0f} MB", flush=True)
    report = {"budget": args.budget, "clips": rows}
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
