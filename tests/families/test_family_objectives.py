"""A training run or an adaptation on any family's checkpoint uses that family's objective and its defaults, not
those of the first family of its kind (nothing here names a family: every registered one is checked)."""

from __future__ import annotations

import pytest

from bufferanytime.families import get_family, list_families
from bufferanytime.training import TrainConfig


@pytest.mark.parametrize("name", list_families())
def test_a_run_on_a_family_checkpoint_takes_that_familys_objective_and_defaults(name, tmp_path):
    family = get_family(name)
    prior = family.make_tiny_prior(tmp_path / name)
    config = TrainConfig(kind=family.kind, model=str(prior), data=[str(tmp_path)],
                         out=str(tmp_path / "run"))
    objective = family.objective_class()
    assert config.objective_class() is objective
    resolved = config.resolved()
    assert (resolved.clip_len, resolved.lr, tuple(resolved.res)) == (
        objective.defaults["clip_len"], objective.defaults["lr"], tuple(objective.defaults["res"]))


def test_a_run_without_a_local_checkpoint_takes_its_kinds_objective(tmp_path):
    for name in list_families():
        kind = get_family(name).kind
        missing = TrainConfig(kind=kind, model=str(tmp_path / "nothing-here"))
        assert missing.objective_class() is TrainConfig(kind=kind).objective_class()
