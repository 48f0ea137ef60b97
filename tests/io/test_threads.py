"""Input and output threads: order kept, queues bounded, errors and interrupts brought back to the caller, and
the depth command decoding and writing off the main thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bufferanytime.io.threads import BackgroundWriter, Prefetch


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
