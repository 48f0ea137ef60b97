"""`accelerate launch --num_processes 2 -m bufferanytime depth ...` splits the inputs across processes.

On a machine without GPUs, accelerate's ``--cpu`` launches ONE process unless MPI is installed; its torchrun-based
launcher (``--multi_gpu``) starts real CPU processes with RANK / WORLD_SIZE set, which is what this test uses.
"""

import json
import subprocess
import sys

from bufferanytime.io.video import write_video
from tests.helpers import launcher_env, moving_pattern


def test_two_cpu_processes_split_the_inputs(tiny_depth_prior, tmp_path):
    videos = []
    for i in range(3):
        videos.append(tmp_path / f"v{i}.mp4")
        write_video(videos[-1], moving_pattern(frames=3, height=32, width=40, seed=i), fps=10)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "bufferanytime", "depth",
           *map(str, videos), "--model", str(tiny_depth_prior), "--max-res", "64", "-o", str(tmp_path / "out"), "-q"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=launcher_env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = {}
    for i in range(3):
        meta = json.loads((tmp_path / f"out/v{i}/depth.meta.json").read_text())
        assert meta["process"]["world_size"] == 2
        ranks[f"v{i}"] = meta["process"]["rank"]
    assert ranks == {"v0": 0, "v1": 1, "v2": 0}
