"""Checkpoints the tool cannot use: each gives one `error:` line naming what is wrong, exit 2, and no output.
Families and kinds come from the registries, never by name."""

from __future__ import annotations

import json
import shutil

import pytest

from bufferanytime.families import FAMILIES, get_family, list_families
from bufferanytime.io.video import write_video
from bufferanytime.tasks import list_tasks
from tests.helpers import files_under, moving_pattern, run_main


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, moving_pattern(frames=3), fps=10)
    return path


@pytest.fixture(scope="module", params=list_families())
def family_prior(request, tmp_path_factory):
    family = get_family(request.param)
    return family, family.make_tiny_prior(tmp_path_factory.mktemp("priors") / family.name)


def _refused(capsys, tmp_path, kind, model, clip) -> str:
    out = tmp_path / "out"
    code, err = run_main(capsys, kind, str(clip), "-o", str(out), "--model", str(model), "-q")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not files_under(out)
    return err[0]


@pytest.mark.parametrize("config", [("config.json", {"model_type": "unknown-architecture"}),
                                    ("model_index.json", {"_class_name": "UnknownPipeline"})])
def test_a_checkpoint_of_an_unknown_family_is_refused_with_the_known_families(capsys, tmp_path, clip, config):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / config[0]).write_text(json.dumps(config[1]))
    line = _refused(capsys, tmp_path, list_tasks()[0], folder, clip)
    assert "unknown prior family" in line and str(folder / config[0]) in line
    assert all(name in line for name in list_families())
    assert all(FAMILIES.get(name).claims() in line for name in list_families())  # what each family reads


def test_a_family_asked_for_a_buffer_it_cannot_make_is_refused(capsys, tmp_path, clip, family_prior):
    family, prior = family_prior
    others = [kind for kind in list_tasks() if not family.produces(kind)]
    assert others, "every family makes one kind only; the command line has one sub-command per kind"
    line = _refused(capsys, tmp_path, others[0], prior, clip)
    assert f"makes {family.kind} models, not {others[0]}" in line and family.title in line


# The families whose checkpoints are diffusers pipelines (identified by model_index.json's _class_name).
DIFFUSERS_FAMILIES = [name for name in list_families() if FAMILIES.get(name).class_names]


@pytest.mark.parametrize("name", DIFFUSERS_FAMILIES)
def test_a_diffusers_folder_missing_a_component_names_it(capsys, tmp_path, clip, name):
    family = get_family(name)
    prior = family.make_tiny_prior(tmp_path / "prior")
    index = prior / "model_index.json"
    assert index.is_file()
    components = [name for name, value in json.loads(index.read_text()).items()
                  if isinstance(value, list) and value[0] is not None and (prior / name).is_dir()]
    assert components
    for component in components:
        broken = tmp_path / f"without-{component}"
        shutil.copytree(prior, broken)
        shutil.rmtree(broken / component)
        line = _refused(capsys, tmp_path, family.kind, broken, clip)
        assert f"{component}/" in line and str(broken) in line, line
