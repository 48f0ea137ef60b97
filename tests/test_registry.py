"""The one registry mechanism and the three public listings built on it."""

import pytest

from bufferanytime.errors import InputError
from bufferanytime.evaluation import list_datasets, load_sequences
from bufferanytime.flow import get_flow_model, list_flows
from bufferanytime.models import list_models, load_model
from bufferanytime.registry import Registry


def test_register_get_list_and_refusals():
    things = Registry("thing")
    things.register("a", 1)

    @things.register("b")
    def b():
        return 2

    assert things.get("a") == 1 and things.get("b") is b and things.list() == ["a", "b"]
    assert "a" in things and list(things) == ["a", "b"] and len(things) == 2
    with pytest.raises(InputError, match="unknown thing 'c'; choose one of a, b"):
        things.get("c")
    with pytest.raises(ValueError, match="already registered"):
        things.register("a", 3)


def test_public_listings_name_what_the_loaders_accept(tmp_path):
    both_kinds = ["tiny-synthetic", "tiny-synthetic-causal"]
    assert list_models() == [*both_kinds, "tiny-synthetic-metric"]
    assert list_models("depth") == [*both_kinds, "tiny-synthetic-metric"] and list_models("normal") == both_kinds
    assert list_flows() == ["dis", "raft-small"]
    assert list_datasets() == ["synthetic", "kitti", "scannet", "bonn", "sintel"]
    assert get_flow_model("dis") is not None
    with pytest.raises(InputError, match="unknown flow method 'x'"):
        get_flow_model("x")
    with pytest.raises(InputError, match="unknown dataset 'x'"):
        load_sequences("x", tmp_path)
    with pytest.raises(InputError, match="unknown model kind 'x'"):
        load_model("x", "tiny-synthetic")
    with pytest.raises(InputError, match="x: no such model directory"):
        load_model("x")  # a lone argument that is no kind is the model
