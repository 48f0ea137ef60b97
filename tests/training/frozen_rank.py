"""``python frozen_rank.py ARGS``: ``bufferanytime ARGS`` in which one process misbehaves before each step, as
``RANK_FAULT`` says (launched by test_distributed.py and test_distributed_faults.py):

- ``freeze`` (the default): the second process sleeps ``FROZEN_SECONDS`` before its first step;
- ``kill``: the second process kills itself (SIGKILL) before its first step;
- ``slow``: every process writes its PID to ``RANK_FAULT_DIR/rank-N.pid`` and sleeps a second before each step.
"""

import os
import signal
import sys
import time
from pathlib import Path

# Longer than any test waits: a run that ends at all has ended by --dist-timeout, not by the process waking.
FROZEN_SECONDS = 3600


def main() -> int:
    from bufferanytime.cli.main import main as cli
    from bufferanytime.training.trainer import Trainer

    prepare = Trainer._prepare
    fault = os.environ.get("RANK_FAULT", "freeze")

    def misbehaving(self, *args):
        if fault == "freeze" and self.rank == 1:
            time.sleep(FROZEN_SECONDS)
        elif fault == "kill" and self.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "slow":
            pid_file = Path(os.environ["RANK_FAULT_DIR"], f"rank-{self.rank}.pid")
            if not pid_file.exists():  # written whole, then renamed: a reader never sees half of it
                pid_file.with_suffix(".tmp").write_text(str(os.getpid()))
                pid_file.with_suffix(".tmp").replace(pid_file)
            time.sleep(1)
        return prepare(self, *args)

    Trainer._prepare = misbehaving
    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
