"""`bufferanytime demo` (what `make demo` runs) on the embedded models, with a small real clip."""

from __future__ import annotations

import json

from bufferanytime.cli.main import main


def test_demo_writes_report_and_video_model_is_steadier(tmp_path, small_video, one_torch_thread, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--input", str(small_video)]) == 0  # no -q: a log, not a terminal
    captured = capsys.readouterr()
    assert "embedded models" in captured.out
    for step in ("rendering the held-out synthetic video", "synthetic normal: evaluating the per-frame prior",
                 "real clip depth: loading and running the video model", "real clip normal: writing the side-by-side"):
        assert step in captured.out, step  # each long stage says so as it starts
    assert "\x1b" not in captured.err + captured.out and "\r" not in captured.err  # no bar redraws in a log
    report = json.loads((out / "report.json").read_text())
    assert report["embedded"] is True
    for kind in ("depth", "normal"):
        synthetic = report["synthetic"][kind]
        # held-out synthetic video with ground-truth flow: the video model flickers less than its prior
        assert synthetic["video model"]["opw"] < synthetic["per-frame prior"]["opw"]
        assert set(report["real"][kind]) == {"per-frame prior", "video model"}
        assert (out / f"eval_{kind}" / "report.md").is_file()
    assert "| depth | video model |" in (out / "report.md").read_text()
    assert any((out / "real").glob("*.mp4"))


def test_demo_rejects_missing_clip_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "-o", str(out), "--input", str(tmp_path / "missing.mp4"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert not out.exists()
