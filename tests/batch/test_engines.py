"""Batch runs on both engines: the Ray engine writes the same bytes as the local one, a rerun recomputes nothing,
a worker SIGKILLed mid-video costs only its own input, a corrupt input fails alone in its row, and Ctrl-C stops the
whole run keeping what finished and leaving no staging folder.

Runs compared bit for bit use one torch thread per process on both sides (the Ray workers have 1 CPU each); every
file is compared, the visualisation mp4 too (x264 runs with a fixed thread count and a synchronous lookahead), and
the meta file without its timings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bufferanytime.batch.work import EVENTS_ENV
from bufferanytime.io.outputs import STAGING_MARKER, STAGING_NAME
from tests.batch.conftest import events, make_clips, rows, staging_left, wait_for
from tests.helpers import default_sigint, run_main

SAVE = ("--save", "npz,png16")
EVERY_FILE = ("--save", "npz,png16,vis")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _comparable(meta: bytes) -> dict:
    """A meta file without what differs by run (timings)."""
    data = json.loads(meta)
    data.pop("timings")
    return data


@pytest.mark.slow
def test_ray_writes_the_same_bytes_as_local_and_a_rerun_recomputes_nothing(
        ray_address, tmp_path, capsys, monkeypatch, one_torch_thread):
    clips = make_clips(tmp_path / "in", 3)
    monkeypatch.setenv(EVENTS_ENV, str(tmp_path / "events.jsonl"))
    code, err = run_main(capsys, "depth", str(tmp_path / "in" / "*.mp4"), "-o", str(tmp_path / "local"), "-q",
                         *EVERY_FILE, "--engine", "local")
    assert code == 0 and err == []
    # no --address: the run starts a Ray instance of its own, although another one (ray_address) runs here
    ray_run = ["depth", *map(str, clips), "-o", str(tmp_path / "ray"), "-q", *EVERY_FILE, "--engine", "ray",
               "--num-workers", "2"]
    code, err = run_main(capsys, *ray_run)
    assert code == 0 and err == []
    for clip in clips:
        local, ray = _files(tmp_path / "local" / clip.stem), _files(tmp_path / "ray" / clip.stem)
        assert sorted(local) == sorted(ray) and len(local) == 3 + 6  # npz, mp4, meta, 6 PNGs
        for name in local:
            if name.endswith(".meta.json"):
                assert _comparable(local[name]) == _comparable(ray[name])
            else:
                assert local[name] == ray[name], name
    first = rows(tmp_path / "ray")
    assert {r["status"] for r in first.values()} == {"done"}
    assert all(r["quality"]["opw_dis"] >= 0 and r["quality"]["scale_jitter"] >= 0 for r in first.values())
    assert {r["input_hash"] for r in first.values()} == {r["input_hash"] for r in rows(tmp_path / "local").values()}
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*") if p.is_file()}
    started = len(events(tmp_path / "events.jsonl"))

    code, err = run_main(capsys, *ray_run)  # the same command again
    assert code == 0 and err == []
    assert len(events(tmp_path / "events.jsonl")) == started  # no worker ran anything
    again = rows(tmp_path / "ray")
    assert {r["status"] for r in again.values()} == {"skipped"}
    assert [again[n]["input_hash"] for n in sorted(again)] == [first[n]["input_hash"] for n in sorted(first)]
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*") if p.is_file()}
    assert {p: t for p, t in after.items() if p.suffix != ".jsonl"} == \
        {p: t for p, t in before.items() if p.suffix != ".jsonl"}


def _kill_when_staged(out: Path, name: str, killed: list[int]) -> None:
    """SIGKILL the worker whose staging folder of ``name`` appears in ``out``, marked as its own (it is then
    mid-video; a kill between the folder's creation and its marker would leave an empty folder that no sweep may
    take for this package's)."""
    def staged() -> list[Path]:
        return [p for p in out.glob(f".{name}.tmp-*") if (p / STAGING_MARKER).is_file()] if out.is_dir() else []

    wait_for(lambda: staged())
    pid = int(STAGING_NAME.match(staged()[0].name).group(1))
    os.kill(pid, signal.SIGKILL)
    killed.append(pid)


@pytest.mark.slow
def test_a_worker_killed_mid_video_costs_only_its_input(ray_address, tmp_path, capsys, monkeypatch):
    clips = make_clips(tmp_path / "in", 21, frames=3, long={2: 60})  # clip02 runs long enough to be killed mid-video
    out, log = tmp_path / "out", tmp_path / "events.jsonl"
    monkeypatch.setenv(EVENTS_ENV, str(log))
    killed: list[int] = []
    killer = threading.Thread(target=_kill_when_staged, args=(out, "clip02", killed), daemon=True)
    killer.start()
    code, err = run_main(capsys, "depth", *map(str, clips), "-o", str(out), "-q", "--engine", "ray",
                         "--address", ray_address, "--num-workers", "2", "--save", "npz")
    killer.join(timeout=60)
    assert code == 0 and err == [] and len(killed) == 1
    found = rows(out)
    assert len(found) == 21 and {r["status"] for r in found.values()} == {"done"}
    assert {n: r["attempts"] for n, r in found.items() if r["attempts"] != 1} == {"clip02.mp4": 2}
    seen = events(log)
    commits = [e["input"] for e in seen if e["event"] == "commit"]
    assert sorted(commits) == sorted(str(c) for c in clips)  # every input written once, none twice
    starts = [Path(e["input"]).name for e in seen if e["event"] == "start"]
    assert {n for n in starts if starts.count(n) > 1} == {"clip02.mp4"}  # only the killed input ran again
    assert not any(e["worker"].endswith(f":{killed[0]}") for e in seen if e["event"] == "commit" and
                   e["input"].endswith("clip02.mp4"))
    for clip in clips:
        assert sorted(p.name for p in (out / clip.stem).iterdir()) == ["depth.meta.json", "depth.npz"]
    assert staging_left(out) == []


def test_a_corrupt_input_fails_alone_in_its_row(tmp_path, capsys, one_torch_thread):
    make_clips(tmp_path / "in", 2)
    (tmp_path / "in" / "bad.mp4").write_bytes(b"not a video at all" * 64)
    manifest = tmp_path / "inputs.jsonl"
    manifest.write_text("".join(json.dumps({"path": f"in/{n}", "label": i}) + "\n"
                                for i, n in enumerate(["clip00.mp4", "bad.mp4", "clip01.mp4"])))
    out = tmp_path / "out"
    code, err = run_main(capsys, "depth", str(manifest), "-o", str(out), "-q", "--engine", "local")
    assert code == 1
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'in' / 'bad.mp4'}: ")
    found = rows(out)
    assert {n: r["status"] for n, r in found.items()} == {"clip00.mp4": "done", "bad.mp4": "failed",
                                                           "clip01.mp4": "done"}
    assert "error: " + found["bad.mp4"]["error"] == err[0]
    assert sorted(p.name for p in out.iterdir()) == ["clip00", "clip01", "depth_manifest.jsonl"]
    code, err = run_main(capsys, "depth", str(manifest), "-o", str(out), "-q", "--engine", "local")
    assert code == 1 and len(err) == 1  # the rerun tries the failed input only
    assert {n: r["status"] for n, r in rows(out).items()} == {"clip00.mp4": "skipped", "bad.mp4": "failed",
                                                               "clip01.mp4": "skipped"}


@pytest.mark.slow
def test_ctrl_c_stops_the_whole_run_and_keeps_what_finished(ray_address, tmp_path):
    clips = make_clips(tmp_path / "in", 6, frames=3, long={3: 400})
    out, log = tmp_path / "out", tmp_path / "events.jsonl"
    env = {**os.environ, EVENTS_ENV: str(log), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "bufferanytime", "depth", *map(str, clips), "-o", str(out),
                                "-q", "--engine", "ray", "--address", ray_address, "--num-workers", "2",
                                "--save", "npz"], env=env, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)
    try:
        wait_for(lambda: list(out.glob(".clip03.tmp-*")) and any(e["event"] == "commit" for e in events(log)),
                 process=process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "error: interrupted"
    committed = {Path(e["input"]).stem for e in events(log) if e["event"] == "commit"}
    assert committed and "clip03" not in committed
    for name in committed:  # every finished input is complete and recorded as done
        assert sorted(p.name for p in (out / name).iterdir()) == ["depth.meta.json", "depth.npz"]
    # a row comes back after its outputs are in place: an input whose row was on its way when the run stopped
    # is complete on disk without its row, and a rerun computes it again
    recorded = {Path(n).stem for n, r in rows(out).items()}
    assert recorded and recorded <= committed and {r["status"] for r in rows(out).values()} == {"done"}
    assert not (out / "clip03").exists() and staging_left(out) == []
    workers = {int(e["worker"].rpartition(":")[2]) for e in events(log)}
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)  # the workers were stopped with the run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
