"""Input and output threads: order kept, queues bounded, errors and interrupts brought back to the caller, and
the depth command decoding (its first window while the model loads) and writing off the main thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bufferanytime.io.threads import BackgroundWriter, HeadStart, Prefetch
from tests.helpers import settled


def test_prefetch_keeps_order_and_stays_at_most_size_ahead():
    produced = []

    def items():
        for i in range(20):
            produced.append(i)
            yield i

    with Prefetch(items(), size=3) as it:
        assert next(it) == 0
        time.sleep(0.3)  # the thread fills the queue and blocks
        assert len(produced) <= 1 + 3 + 1  # taken + queued + the one waiting to be queued
        assert [0, *it] == list(range(20))


def test_prefetch_raises_the_producer_error_in_the_consumer():
    def items():
        yield 1
        raise ValueError("truncated")

    it = Prefetch(items(), size=2)
    assert next(it) == 1
    with pytest.raises(ValueError, match="truncated"):
        next(it)


def test_closing_a_prefetch_early_stops_its_thread_and_closes_the_source():
    closed = threading.Event()

    def items():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    it = Prefetch(items(), size=2, name="reader-under-test")
    assert next(it) == 0
    it.close()
    assert closed.is_set()
    assert "reader-under-test" not in {t.name for t in threading.enumerate()}


def test_a_head_start_takes_at_most_its_limit_on_its_thread_then_hands_everything_over():
    produced = []

    def items():
        for i in range(10):
            produced.append(threading.current_thread().name)
            yield i

    head = HeadStart(items(), limit=4, name="head-under-test")
    assert settled(head, 4) == 4 and produced == ["head-under-test"] * 4
    assert list(head) == list(range(10))
    assert produced[4:] == [threading.current_thread().name] * 6  # the rest in the consumer's thread


def test_a_head_start_s_limit_can_be_raised_while_it_runs():
    head = HeadStart(iter(range(100)), limit=2)
    deadline = time.monotonic() + 60
    while head.taken < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert head.taken == 2  # waiting at its limit
    head.allow(5)
    head.allow(3)  # never lowered
    while head.taken < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert head.taken == 5
    assert list(head) == list(range(100))


def test_a_head_start_stops_taking_when_the_first_item_is_asked_for():
    release = threading.Event()

    def items():
        yield 0
        release.wait(timeout=60)  # the consumer asks while the thread is inside this item
        yield from range(1, 100)

    head = HeadStart(items(), limit=100)
    while head.taken < 1:
        time.sleep(0.01)
    iterator = iter(head)
    threading.Timer(0.2, release.set).start()
    assert next(iterator) == 0
    assert head.taken <= 1  # the thread finished the item it was taking and stopped
    assert list(iterator) == list(range(1, 100))


def test_a_head_start_raises_the_producer_error_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("truncated")

    head = HeadStart(items(), limit=10)
    got = []
    with pytest.raises(ValueError, match="truncated"):
        for item in head:
            got.append(item)
    assert got == [1, 2]


def test_closing_an_unused_head_start_closes_the_source():
    closed = threading.Event()

    def items():
        try:
            yield from range(1000)
        finally:
            closed.set()

    head = HeadStart(items(), limit=5, name="head-under-test")
    head.close()
    assert closed.is_set() and head.taken == 0
    assert "head-under-test" not in {t.name for t in threading.enumerate()}


def test_writer_writes_everything_in_order_and_bounds_its_queue():
    written, gate = [], threading.Event()

    def write(item):
        gate.wait()
        written.append(item)

    writer = BackgroundWriter(write, size=2)
    writer.put(0)  # taken by the thread, which waits at the gate
    writer.put(1)
    writer.put(2)
    blocked = threading.Thread(target=writer.put, args=(3,))
    blocked.start()
    time.sleep(0.3)
    assert blocked.is_alive()  # the queue is full: the producer waits instead of piling frames up
    gate.set()
    blocked.join(5)
    writer.close()
    assert written == [0, 1, 2, 3]


def test_writer_error_is_raised_in_the_producer():
    def write(item):
        raise OSError(28, "No space left on device")

    writer = BackgroundWriter(write, size=1)
    with pytest.raises(OSError, match="No space"):
        for i in range(100):
            writer.put(i)
            time.sleep(0.01)
        writer.close()


def test_an_exception_in_the_producer_stops_the_writer_without_writing_the_rest():
    written, gate = [], threading.Event()

    def write(item):
        gate.wait()
        written.append(item)

    with pytest.raises(KeyboardInterrupt):
        with BackgroundWriter(write, size=8, name="writer-under-test") as writer:
            for i in range(5):
                writer.put(i)
            threading.Timer(0.2, gate.set).start()
            raise KeyboardInterrupt
    assert len(written) <= 1  # at most the frame being written when the interrupt came
    assert "writer-under-test" not in {t.name for t in threading.enumerate()}


def test_depth_decodes_and_writes_off_the_main_thread(tmp_path, monkeypatch, small_video):
    """The model runs on the main thread; decoding runs on 'decode', per-frame outputs on the writer thread."""
    import bufferanytime.inference.pipeline as pipeline
    import bufferanytime.io.video as video
    from bufferanytime.cli.main import main

    threads = {"decode": set(), "write": set()}
    decode, exr = video._decode_video, pipeline._write_exr_frame

    def traced_decode(*args, **kwargs):
        for frame in decode(*args, **kwargs):
            threads["decode"].add(threading.current_thread().name)
            yield frame

    def traced_exr(*args):
        threads["write"].add(threading.current_thread().name)
        exr(*args)

    monkeypatch.setattr(video, "_decode_video", traced_decode)
    monkeypatch.setattr(pipeline, "_write_exr_frame", traced_exr)
    assert main(["depth", str(small_video), "-o", str(tmp_path / "out"), "--save", "npz,exr", "-q"]) == 0
    main_thread = threading.main_thread().name
    assert threads["decode"] and main_thread not in threads["decode"]
    assert threads["write"] and main_thread not in threads["write"]
    disparity = np.load(tmp_path / "out" / "clip" / "depth.npz")["disparity"]
    assert len(list((tmp_path / "out" / "clip" / "depth_exr").glob("*.exr"))) == len(disparity)


def _trace_loading(monkeypatch, ahead_before_load: int) -> list[str]:
    """The names of the threads that decode each frame of a ``depth`` run (in order), its model loading held back
    until ``ahead_before_load`` frames were decoded ahead (or a minute passed), then 0.2 s more."""
    import bufferanytime.inference.pipeline as pipeline
    import bufferanytime.io.video as video

    decoded_by: list[str] = []
    decode, load = video._decode_video, pipeline.load_predictor

    def traced_decode(*args, **kwargs):
        for frame in decode(*args, **kwargs):
            decoded_by.append(threading.current_thread().name)
            yield frame

    def slow_load(*args, **kwargs):  # what loading a large model gives time for
        deadline = time.monotonic() + 60
        while decoded_by.count("decode-ahead") < ahead_before_load and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # more time, in which the decoding ahead must not go past its limit
        return load(*args, **kwargs)

    monkeypatch.setattr(video, "_decode_video", traced_decode)
    monkeypatch.setattr(pipeline, "load_predictor", slow_load)
    return decoded_by


def test_depth_decodes_the_first_window_while_the_model_loads(tmp_path, monkeypatch, small_video):
    """What the 'decode-ahead' thread decoded before the model was loaded is the first window (the --window given),
    and the outputs are those of a run that decodes everything in the model's pipeline."""
    import bufferanytime.io.video as video
    from bufferanytime.cli.main import main

    decoded_by = _trace_loading(monkeypatch, 3)
    assert main(["depth", str(small_video), "-o", str(tmp_path / "ahead"), "--window", "3", "-q"]) == 0
    assert decoded_by[:3] == ["decode-ahead"] * 3 and "decode-ahead" not in decoded_by[3:]
    monkeypatch.setattr(video.VideoSource, "decode_ahead", lambda self, *args, **kwargs: None)
    assert main(["depth", str(small_video), "-o", str(tmp_path / "plain"), "--window", "3", "-q"]) == 0
    first, second = (np.load(tmp_path / d / "clip" / "depth.npz")["disparity"] for d in ("ahead", "plain"))
    assert np.array_equal(first, second)


def test_depth_decodes_ahead_no_more_than_the_model_s_first_window(tmp_path, monkeypatch):
    """Without --window, a saved video model's clip length (the embedded model's 10) bounds the frames decoded ahead:
    frames held beyond the first window would add to the peak memory of a model with short windows."""
    from bufferanytime.cli.main import main
    from bufferanytime.io.video import write_video
    from bufferanytime.models import load_model
    from tests.helpers import moving_pattern

    clip = tmp_path / "long.mp4"
    write_video(clip, moving_pattern(frames=24), fps=10)
    window = load_model("depth").clip_len
    decoded_by = _trace_loading(monkeypatch, window)
    assert main(["depth", str(clip), "-o", str(tmp_path / "out"), "-q"]) == 0
    assert decoded_by.count("decode-ahead") == window < 24


@pytest.mark.parametrize("fails", ["interrupt", "bad model"])
def test_a_model_that_fails_to_load_leaves_no_decoding_thread(tmp_path, monkeypatch, small_video, fails):
    import bufferanytime.inference.pipeline as pipeline
    from bufferanytime.cli.main import main

    def failing_load(*args, **kwargs):
        raise KeyboardInterrupt

    if fails == "interrupt":
        monkeypatch.setattr(pipeline, "load_predictor", failing_load)
    model = ["--model", str(tmp_path / "missing")] if fails == "bad model" else []
    code = main(["depth", str(small_video), *model, "-o", str(tmp_path / "out"), "-q"])
    assert code == (130 if fails == "interrupt" else 2)
    assert "decode-ahead" not in {t.name for t in threading.enumerate()}
    assert not (tmp_path / "out").exists()


def test_an_interrupt_mid_run_leaves_no_staging_and_no_threads(tmp_path, monkeypatch, small_video):
    import bufferanytime.inference.pipeline as pipeline
    from bufferanytime.cli.main import main

    calls = []
    original = pipeline.Predictor.__call__

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pipeline.Predictor, "__call__", interrupted)
    before = {t.name for t in threading.enumerate()}
    code = main(["depth", str(small_video), "-o", str(tmp_path / "out"), "--window", "2", "--overlap", "0",
                 "--save", "npz,vis,exr", "-q"])
    assert code == 130
    assert not (tmp_path / "out").exists()
    assert {t.name for t in threading.enumerate()} <= before
