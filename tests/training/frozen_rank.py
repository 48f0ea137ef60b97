"""``python frozen_rank.py ARGS``: ``bufferanytime ARGS`` whose second process freezes before its first step
(launched by test_distributed.py to check that the others stop after ``--dist-timeout``)."""

import sys
import time

FROZEN_SECONDS = 120


def main() -> int:
    from bufferanytime.cli.main import main as cli
    from bufferanytime.training.trainer import Trainer

    prepare = Trainer._prepare

    def frozen_on_rank_one(self, *args):
        if self.rank == 1:
            time.sleep(FROZEN_SECONDS)
        return prepare(self, *args)

    Trainer._prepare = frozen_on_rank_one
    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
