import torch

from bufferanytime.training.ema import EMA


def test_moving_average_of_the_weights():
    w = torch.nn.Parameter(torch.zeros(3))
    ema = EMA({"w": w}, decay=0.9)
    for value in (1.0, 2.0):
        with torch.no_grad():
            w.fill_(value)
        ema.update({"w": w})
    expected = 0.9 * (0.9 * 0 + 0.1 * 1.0) + 0.1 * 2.0
    assert torch.allclose(ema.shadow["w"], torch.full((3,), expected))

    restored = EMA({"w": w}, decay=0.9)
    restored.load_state_dict(ema.state_dict())
    restored.copy_to({"w": w})
    assert torch.allclose(w.detach(), torch.full((3,), expected))


def test_zero_decay_follows_the_weights_exactly():
    w = torch.nn.Parameter(torch.randn(5))
    ema = EMA({"w": w}, decay=0.0)
    with torch.no_grad():
        w.mul_(3.7)
    ema.update({"w": w})
    assert torch.equal(ema.shadow["w"], w.detach())
