"""The peak resident memory of a child process, its own.

``resource.getrusage(...).ru_maxrss`` is the wrong figure for a process started from a large one: Linux carries the
high-water mark of the memory image an ``exec`` replaces into the new program's ``ru_maxrss`` (and ``subprocess``
starts children with ``vfork``, whose image is the parent's), so a 13 MB child of a 1.4 GB benchmark reports
1.4 GB; ``RUSAGE_CHILDREN`` is the maximum of those. ``VmHWM`` in ``/proc/PID/status`` belongs to the process's own
memory image, created by its ``exec``: this module reads that, in the child, just before it exits.

As a library: :func:`run_python` runs ``python ARGS...`` (``-m module ...``, ``-c code ...`` or ``script.py ...``)
through this file as a launcher and returns the child's ``VmHWM`` with the completed process; :func:`own_peak_kb`
is a process's own figure, for code that prints it itself. As a script:

    python benchmarks/peak_memory.py REPORT_FILE (-m MODULE | -c CODE | SCRIPT) [ARGS...]

runs the Python program in this interpreter and writes its ``VmHWM`` (kB) to REPORT_FILE when it ends, whichever way
(a return, ``sys.exit`` or an exception); the exit code is the program's.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path


def own_peak_kb(pid: int | str = "self") -> int:
    """``VmHWM`` of process ``pid`` (default: this one) in kB: the peak resident memory of its own image."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise OSError(f"/proc/{pid}/status has no VmHWM (not Linux, or the process has ended)")


def run_python(args: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``sys.executable ARGS...`` in a fresh interpreter; the completed process and the child's own peak (kB).

    ``kwargs`` go to :func:`subprocess.run` (``check``, ``capture_output``, ``text``, ``env``...). The peak is that
    of the interpreter running the program, started with nothing else loaded (this module imports only the standard
    library), so it is the program's figure.
    """
    with tempfile.TemporaryDirectory(prefix="peak-") as tmp:
        report = Path(tmp) / "peak_kb"
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(report), *args], **kwargs)
        if not report.exists():
            raise RuntimeError(f"the child exited ({done.returncode}) without reporting its peak memory")
        return done, int(report.read_text())


def _run(args: list[str]) -> None:
    """Run the program ``args`` names as ``python ARGS...`` would, in this interpreter."""
    if args[0] in ("-m", "-c"):  # as python would: the current folder first on the path, not this file's
        sys.path[0] = os.getcwd()
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    elif args[0] == "-c":
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102 - the caller's own code
    else:
        sys.argv = list(args)
        sys.path[0] = str(Path(args[0]).resolve().parent)
        runpy.run_path(args[0], run_name="__main__")


def main() -> None:
    report, args = Path(sys.argv[1]), sys.argv[2:]
    try:
        _run(args)
    finally:
        report.write_text(str(own_peak_kb()))


if __name__ == "__main__":
    main()
