"""Turn a checkpoint of a `bufferanytime train` run into a loadable video model with the checkpoint's EMA weights.

Works before the run has written RUN/model (a run stopped early, or a checkpoint chosen on validation): the model
is rebuilt from the run's config.json (its --model, --clip-len and, for --causal runs, the horizon) and saved with
``save_pretrained``, its config naming the prior by the path the run used.

    python scripts/export_checkpoint.py KIND RUN STEP OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import load_file

from bufferanytime.models import load_model
from bufferanytime.models.temporal import make_causal


def export(kind: str, run: Path, step: int, out: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    model = load_model(kind, config["model"])
    model.clip_len = int(config["clip_len"])
    if config.get("causal"):
        make_causal(model, int(config["horizon"]))
    ema = load_file(str(run / "checkpoints" / f"step-{step:08d}" / "ema.safetensors"))
    missing, unexpected = model.load_state_dict(ema, strict=False)
    if unexpected or set(model.trainable_state_dict()) - set(ema):
        raise SystemExit(f"checkpoint does not match the model ({len(unexpected)} unexpected)")
    model.save_pretrained(out)


if __name__ == "__main__":
    export(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
