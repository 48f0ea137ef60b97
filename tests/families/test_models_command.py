"""`bufferanytime models` lists every registered family with what it makes, and every embedded model."""

from __future__ import annotations

from bufferanytime.cli.main import main
from bufferanytime.families import get_family, list_families
from bufferanytime.models import MODELS, list_models


def test_models_lists_the_families_and_the_embedded_models(capsys):
    assert main(["models"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    for name in list_families():
        family = get_family(name)
        line = next(line for line in lines if line.split()[0] == name)
        assert family.title in line and all(task.name in line for task in family.tasks)
    for name in list_models():
        line = next(line for line in lines if line.split()[0] == name)
        assert all(kind in line for kind in MODELS.get(name))
