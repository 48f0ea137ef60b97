import os
import platform
import subprocess
import sys

SNIPPET = "from bufferanytime.cli.main import limit_malloc_arenas; print(limit_malloc_arenas())"


def _run(env: dict) -> str:
    done = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_cli_caps_malloc_arenas_on_glibc_unless_the_user_chose():
    """Reader and writer threads each got their own glibc arena, and the CLI's peak memory varied 3.6-6.0 GB for
    work that peaked at 3.2-3.6 GB with two arenas (#19)."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert _run(env) == str(glibc)
    assert _run({**env, "MALLOC_ARENA_MAX": "4"}) == "False"  # the user's own setting wins
