import json

import pytest

from bufferanytime.cli.main import build_parser
from bufferanytime.cli.train import build_config
from bufferanytime.constants import (
    CLIP_LEN_DEPTH,
    CLIP_LEN_NORMAL,
    CYCLE_TAU,
    EMA_DECAY,
    LR_DEPTH,
    LR_NORMAL,
    W_REG,
    WARMUP_STEPS,
)
from bufferanytime.errors import InputError
from bufferanytime.training import TrainConfig


def _parse(*argv):
    return build_parser(["train"]).parse_args(["train", *argv])


def test_paper_defaults_per_kind():
    depth = TrainConfig(kind="depth", data=["d"], model="m", out="o").resolved()
    normal = TrainConfig(kind="normal", data=["d"], model="m", out="o").resolved()
    assert (depth.clip_len, depth.lr) == (CLIP_LEN_DEPTH, LR_DEPTH)
    assert (normal.clip_len, normal.lr) == (CLIP_LEN_NORMAL, LR_NORMAL)
    for cfg in (depth, normal):
        assert (cfg.w_reg, cfg.warmup, cfg.ema, cfg.tau) == (W_REG, WARMUP_STEPS, EMA_DECAY, CYCLE_TAU)
        assert cfg.flow in ("dis", "raft-small")


def test_flags_override_config_file_which_overrides_defaults(tmp_path):
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("data: [a, b]\nmodel: prior\nout: run\nlr: 3.0e-4\nclip-len: 16\nres: 294x518\nema: 0.99\n")
    cfg = build_config(_parse("depth", "--config", str(yaml_file), "--lr", "5e-5", "--steps", "7")).resolved()
    assert cfg.data == ["a", "b"] and cfg.model == "prior"
    assert cfg.lr == 5e-5 and cfg.steps == 7  # flags win
    assert cfg.clip_len == 16 and cfg.res == (294, 518) and cfg.ema == 0.99  # from the file
    assert cfg.warmup == WARMUP_STEPS  # default

    json_file = tmp_path / "train.json"
    json_file.write_text(json.dumps({"data": "x", "model": "m", "out": "o", "flow": "dis", "edge_mask": False}))
    cfg = build_config(_parse("normal", "--config", str(json_file), "--res", "256")).resolved()
    assert cfg.data == ["x"] and cfg.res == (256, 256) and cfg.edge_mask is False and cfg.lr == LR_NORMAL


def test_resume_takes_the_saved_run_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = TrainConfig(kind="depth", data=["d"], model="m", out=str(run), lr=2e-4, clip_len=8, steps=10)
    history = [{"step": 5, "changed": {"steps": [5, 10]}}]  # a run's record of changes is not an option
    (run / "config.json").write_text(json.dumps({**saved.to_dict(), "history": history}))
    cfg = build_config(_parse("depth", "--out", str(run), "--resume", "--steps", "20")).resolved()
    assert (cfg.lr, cfg.clip_len, cfg.steps, cfg.resume, cfg.data) == (2e-4, 8, 20, True, ["d"])
    with pytest.raises(InputError, match="depth run"):
        build_config(_parse("normal", "--out", str(run), "--resume"))


@pytest.mark.parametrize(
    "content, message",
    [
        ("learning_rate: 1\n", "unknown option"),
        ("steps: many\n", "bad value"),
        ("- a\n- b\n", "mapping"),
        ("ema: [1\n", "cannot parse"),
        ("kind: normal\n", "contradicts"),
    ],
)
def test_bad_config_files_are_input_errors(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        build_config(_parse("depth", "--config", str(path)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data": []}, "--data"),
        ({"clip_len": 1}, "--clip-len"),
        ({"ema": 1.0}, "--ema"),
        ({"flow": "raft-small"}, "--flow-weights"),
        ({"res": (4, 4)}, "--res"),
    ],
)
def test_invalid_values_are_input_errors(overrides, message):
    options = {"data": ["d"], "model": "m", "out": "o", **overrides}
    with pytest.raises(InputError, match=message):
        TrainConfig(**options).resolved()


def test_cli_reports_missing_data_dir_in_one_line(tmp_path, capsys):
    from bufferanytime.cli.main import main

    code = main(["train", "depth", "--data", str(tmp_path / "nope"), "--model", "m", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "no such data folder" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_allow_change_takes_option_names_as_flags_or_keys():
    base = ("depth", "--data", "d", "--model", "m", "--out", "o")
    cfg = build_config(_parse(*base, "--allow-change", "lr,w-reg", "--allow-change", "world-size")).resolved()
    assert cfg.allow_change == ["lr", "w_reg", "world_size"]
    with pytest.raises(InputError, match="--allow-change: unknown option.*lerning_rate"):
        build_config(_parse(*base, "--allow-change", "lr,lerning-rate")).resolved()


def test_run_record_keeps_data_content_apart_from_the_options(tmp_path):
    """config.json's data content and history are not options: reading it back gives them separately."""
    from bufferanytime.training.config import DATA_CONTENT, HISTORY, read_run_config, read_run_record

    saved = {**TrainConfig(kind="depth").to_dict(), HISTORY: [{"step": 2, "changed": {"lr": [1, 2]}}],
             DATA_CONTENT: {"videos": 3, "sha256": "ab"}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    options, history, data = read_run_record(path)
    assert data == {"videos": 3, "sha256": "ab"} and history == saved[HISTORY]
    assert DATA_CONTENT not in options and HISTORY not in options
    TrainConfig().updated(options, str(path))  # every key left is an option
    assert read_run_config(path) == (options, history)
