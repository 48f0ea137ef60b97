"""What an adaptation keeps and how it plans: the steadiest weights the guard rails pass, its default learning
rate, and the step time measured warm."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from bufferanytime.adapt import guard, run
from bufferanytime.adapt import session as session_module
from bufferanytime.adapt.plan import Candidate
from bufferanytime.adapt.record import RECORD_NAME
from bufferanytime.adapt.session import MEASURED_TIMES, Session
from bufferanytime.constants import LR_NORMAL, W_REG
from bufferanytime.models import load_model
from tests.helpers import run_main


def test_keeps_the_steadiest_weights_the_guard_rails_pass(clips, tmp_path, monkeypatch, capsys):
    before = guard.Figures(1.0, 0.01)
    # step 1 passes; step 2 flickers least but is far from the prior (refused); step 3 passes and improves on 1
    validations = [guard.Figures(0.6, 0.01), guard.Figures(0.3, 5.0), guard.Figures(0.5, 0.01)]
    values = itertools.chain([before], validations, itertools.repeat(guard.Figures(0.5, 0.01)))
    monkeypatch.setattr(run, "figures", lambda *args: next(values))
    out = tmp_path / "model"
    code, err = run_main(capsys, "adapt", "depth", str(clips[0]), "-o", str(out), "--budget", "3steps", "-q")
    assert code == 0, err
    record = json.loads((out / RECORD_NAME).read_text())
    curve = record["validation"]["curve"]
    assert [(p["step"], p["opw"], p["passed"]) for p in curve] == [(0, 1.0, False), (1, 0.6, True), (2, 0.3, False),
                                                                   (3, 0.5, True)]
    assert record["validation"]["best_step"] == 3 and record["validation"]["best_opw"] == 0.5
    assert record["result"] == "adapted" and record["guard"]["after"]["opw"] == 0.5


def test_default_learning_rate_is_the_objectives_adapt_rate():
    assert run.default_lr(load_model("depth")) == 5e-4  # not train's 1e-4: an adaptation runs hundreds of steps
    assert run.default_lr(load_model("normal")) == LR_NORMAL  # no rate of its own: train's


def test_default_regularization_weight_is_the_objectives_adapt_weight():
    assert run.default_w_reg(load_model("depth")) == 0.5  # a lighter pull to the prior than train's 1
    assert run.default_w_reg(load_model("normal")) == W_REG  # no weight of its own: the paper's


def test_step_time_is_the_fastest_of_the_passes_and_thread_counts_timed(monkeypatch):
    assert MEASURED_TIMES >= 2
    # one thread: a cold first pass, then a warm one; two threads: slower steps (as on a shared CPU)
    times = iter([(3.0, 9.0), (1.0, 2.0), (0.5, 5.0), (0.5, 4.0)])

    class Stub(Session):
        def __init__(self):
            self._frames = {}

        def size(self, segment, fraction=None):
            return (10, 10)

        def prepare(self, clip, keep=True, fraction=None):
            return {}

    monkeypatch.setattr(Stub, "_time_step", lambda self, prepared: next(times))
    monkeypatch.setattr(session_module, "thread_counts", lambda: [1, 2])
    threads = torch.get_num_threads()
    try:
        stub = Stub()
        costs = stub.measure(run.Clip(0, 0, 4), Candidate(1.0, 4))
        assert stub.threads == 1 and torch.get_num_threads() == 1  # left set for the steps
    finally:
        torch.set_num_threads(threads)
    unit = 10 * 10 * 4
    assert costs.forward == pytest.approx(1.0 / unit) and costs.step == pytest.approx(2.0 / unit)


def test_the_callers_thread_count_and_a_models_own_training_mode_are_restored(clips, monkeypatch):
    """The run steps on its own thread count with the temporal blocks recomputed in the backward pass (gradient
    checkpointing); the caller gets back its thread count, and a model (its own, left as it was, and the adapted
    one) that trains as models do."""
    from bufferanytime.models.temporal import TemporalBlock

    monkeypatch.setattr(session_module, "thread_counts", lambda: [1])
    checkpointed, real_step = [], Session.step

    def step(self, clip):  # notes whether the blocks recompute their layers while the run steps
        checkpointed.extend(m.gradient_checkpointing for m in self.model.modules() if isinstance(m, TemporalBlock))
        return real_step(self, clip)

    monkeypatch.setattr(Session, "step", step)
    model = load_model("depth", None)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        adapted = run.adapt(model, clips[:2], "1steps", kind="depth")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert checkpointed and all(checkpointed)
    for returned in (model, adapted):
        assert not any(m.gradient_checkpointing for m in returned.modules() if isinstance(m, TemporalBlock))


def test_the_guard_rails_check_at_the_inference_size_whatever_the_training_size(clips):
    from bufferanytime.adapt.footage import load_footage
    from bufferanytime.flow import get_flow_model
    from bufferanytime.training.config import TrainConfig

    model = load_model("depth")
    footage = load_footage([clips[0]], model.size_rule())
    session = Session(model, footage, TrainConfig(kind="depth"), get_flow_model("dis"), torch.device("cpu"), 0)
    session.start(0.5, "temporal", 1e-3, 0)
    held = [i for i, s in enumerate(footage.segments) if s.span.held_out]
    checked = session.held_out_frames()
    assert [f.shape[1:3] for f in checked] == [footage.segments[i].frames.shape[1:3] for i in held]
    assert all(session.size(i)[0] < footage.segments[i].frames.shape[1] for i in held)  # trained smaller


def test_prepared_clips_are_kept_in_half_precision_and_given_back_in_float32(clips):
    from bufferanytime.adapt.footage import cut_clips, load_footage
    from bufferanytime.adapt.session import CACHE_DTYPE, _compact, _expanded, _nbytes
    from bufferanytime.flow import get_flow_model
    from bufferanytime.training.config import TrainConfig

    model = load_model("depth")
    footage = load_footage([clips[0]], model.size_rule())
    session = Session(model, footage, TrainConfig(kind="depth"), get_flow_model("dis"), torch.device("cpu"), 0)
    clip = cut_clips(footage, 4, held_out=False)[0]
    fresh = session.objective.prepare(session.frames(clip.segment)[: clip.length].float() / 255.0, None)
    given = session.prepare(clip)
    kept, _ = next(iter(session._prepared.values()))
    assert _nbytes(kept) < 0.6 * _nbytes(fresh)
    assert {k: v.dtype for k, v in given.items()} == {k: v.dtype for k, v in fresh.items()}
    for key, value in fresh.items():
        if value.is_floating_point():
            assert kept[key].dtype == CACHE_DTYPE
            scale = value.abs().max().clamp_min(1.0)
            assert (given[key] - value).abs().max() <= 1e-3 * scale, key
        else:
            assert torch.equal(given[key], value), key
    assert torch.equal(session.prepare(clip)["flow_fwd"], given["flow_fwd"])  # the same values at every use
    huge = {"x": torch.tensor([1.0, 1e6])}  # beyond float16's range: kept as it is
    assert _compact(huge)[0]["x"].dtype == torch.float32
    own_half = {"x": torch.ones(3, dtype=CACHE_DTYPE)}  # a model's own half-precision latents: given back as they are
    assert _expanded(*_compact(own_half))["x"].dtype == CACHE_DTYPE
