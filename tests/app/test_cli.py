"""`bufferanytime app` on the command line: its options, a port that cannot be served, and its start-up lines."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from bufferanytime.cli.main import COMMANDS, main
from tests.helpers import default_sigint, run_main

START_PATIENCE = 600  # seconds: a bound for a hung app, far above a start-up on a slow, busy machine


def test_app_command_help(capsys):
    assert "app" in COMMANDS
    with pytest.raises(SystemExit) as info:
        main(["app", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "--host" in out and "--port" in out and "--max-frames" in out


def test_app_command_rejects_a_bad_limit(capsys):
    with pytest.raises(SystemExit) as info:
        main(["app", "--max-frames", "0"])
    assert info.value.code == 2 and capsys.readouterr().err.startswith("error: ")


@pytest.fixture()
def own_tmp(tmp_path, monkeypatch):
    """Temporary files of the command go under ``tmp_path/tmp``, so a test sees whether any is left."""
    import tempfile

    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    monkeypatch.setenv("GRADIO_TEMP_DIR", "")  # the command sets it for its own server: restored after the test
    monkeypatch.delenv("GRADIO_TEMP_DIR")
    return root


@pytest.fixture()
def taken_port():
    """A port on 127.0.0.1 that another socket listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(("value", "reason"), [("99999", "must be a port from 1 to 65535, got 99999"),
                                               ("0", "must be >= 1, got 0"), ("http", "must be a whole number")])
def test_a_port_out_of_range_is_one_line(capsys, own_tmp, value, reason):
    code, err = run_main(capsys, "app", "--port", value)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: argument --port: {reason}")
    assert not any(own_tmp.iterdir())


def test_a_port_in_use_is_one_line_before_the_slow_start(capsys, own_tmp, taken_port):
    code, err = run_main(capsys, "app", "--port", str(taken_port))
    assert code == 2
    assert err == [f"error: cannot serve on 127.0.0.1:{taken_port}: the port is in use (choose another with --port)"]
    assert not any(own_tmp.iterdir())


def test_a_port_taken_after_the_check_is_one_line_and_leaves_nothing(capsys, own_tmp, taken_port, monkeypatch):
    """The port is free when checked and taken when the server binds it: Gradio's failure is the same line."""
    from bufferanytime.cli import app

    monkeypatch.setattr(app, "check_port", lambda host, port: None)
    code, err = run_main(capsys, "app", "--port", str(taken_port))
    assert code == 2 and err[-1] == (f"error: cannot serve on 127.0.0.1:{taken_port}: the port is in use "
                                     "(choose another with --port)")
    assert [line for line in err if not line.startswith("app: ")] == [err[-1]]  # progress lines, then the error
    assert not any(own_tmp.iterdir())  # the app's temporary folder is gone


@pytest.mark.parametrize("host", ["nosuch.invalid", "192.0.2.1"])
def test_an_address_that_is_not_this_machines_is_one_line(capsys, own_tmp, host):
    code, err = run_main(capsys, "app", "--host", host)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and host in err[0]


def test_a_models_directory_that_does_not_exist_is_one_line(capsys, own_tmp, tmp_path):
    code, err = run_main(capsys, "app", "--models", str(tmp_path / "nope"))
    assert err == [f"error: {tmp_path / 'nope'}: no such model directory (--models takes directories)"] and code == 2


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def test_start_up_says_each_step_then_the_address_and_no_share_hint(tmp_path):
    """The real command in its own process: a line per start-up step on stderr, then the address on stdout;
    nothing about share links (the app is offline by design); Ctrl-C stops it with exit 0 and nothing left."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("GRADIO_TEMP_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "bufferanytime.cli.main", "app", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=default_sigint)
    out: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, out), daemon=True).start()
    try:
        first = out.get(timeout=START_PATIENCE)  # the address comes once the server listens
        assert first == f"Serving on http://127.0.0.1:{port}/ (Ctrl-C to stop)"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=START_PATIENCE) as page:
            assert page.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=START_PATIENCE)
    rest = []
    while (line := out.get(timeout=START_PATIENCE)) is not None:
        rest.append(line)
    err = proc.stderr.read()
    assert code == 0 and rest == [], rest
    assert err.splitlines()[:3] == ["app: loading Gradio and the model code ...", "app: building the page ...",
                                    "app: starting the server ..."], err
    assert "share" not in err + first and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # the request folders and Gradio's copies went with the app
