"""``bufferanytime models``: the prior families the tool knows, the embedded models, and what each produces.

Any checkpoint of a listed family can be passed as ``--model DIR_OR_HF_ID`` to ``depth``, ``normal``, ``train``,
``eval`` and ``export``: the family is read from the checkpoint's own config (transformers' ``model_type``,
diffusers' ``_class_name``).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the prior families, the embedded models and what each produces",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run)


def family_lines() -> list[str]:
    """One line per registered family: name, title, tasks, the checkpoints it reads, where they come from."""
    from bufferanytime.families import FAMILIES, get_family

    lines = []
    for name in FAMILIES:
        family = get_family(name)
        tasks = ", ".join(task.name for task in family.tasks)
        lines.append(f"  {name:<22} {family.title}: makes {tasks} ({FAMILIES.get(name).claims()}; {family.source})")
    return lines


def embedded_lines() -> list[str]:
    """One line per embedded model: its kinds and the family of each (read from the configs, no weights loaded)."""
    from bufferanytime.families import family_name_of
    from bufferanytime.models import MODELS

    lines = []
    for name in MODELS:
        parts = ", ".join(f"{kind} ({family_name_of(folder)})" for kind, folder in MODELS.get(name).items())
        lines.append(f"  {name:<22} {parts}")
    return lines


def run(args: argparse.Namespace) -> int:
    print("Prior families (pass any of their checkpoints as --model DIR_OR_HF_ID):")
    print("\n".join(family_lines()))
    print("Embedded models (--model NAME; demonstration models trained on procedural scenes):")
    print("\n".join(embedded_lines()))
    return 0
