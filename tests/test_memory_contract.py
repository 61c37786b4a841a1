"""The memory-layer contract (DESIGN.md), checked in float64 for every model config in conf/model/.

Each model is built from its own yaml through Hydra (`instantiate(cfg.model.memory, input_size=D)`)
with the small sizes of SMALL below, so adding a model = adding its yaml + a SMALL entry.
"""
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

MODEL_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
MODELS = sorted(p.stem for p in MODEL_DIR.glob("*.yaml"))
D, B, T = 6, 3, 9

# Small sizes per model (overrides of the `model` node) so the suite runs in seconds.
SMALL = {
    "gru": {"width": 8},
    "lstm": {"width": 8},
    "mlp": {"width": 8},
    "shm": {"width": 8, "memory": {"mem_size": 4, "num_thetas": 5, "theta_sampling": "fixed"}},
    "fwp": {"width": 8, "memory": {"mem_size": 4}},
    "mlstm": {"width": 8, "memory": {"mem_size": 4}},
    "ffm": {"width": 8, "memory": {"trace_size": 4, "context_size": 2}},
    "s6": {"width": 8, "memory": {"d_state": 4}},
    "gpt2": {"width": 8, "memory": {"n_head": 2, "window": 32}},
}


def build(name, seed=0, extra=None, dtype=torch.float64):
    cfg = OmegaConf.create({"model": OmegaConf.load(MODEL_DIR / f"{name}.yaml")})
    cfg.model = OmegaConf.merge(cfg.model, SMALL.get(name, {}), extra or {})
    torch.manual_seed(seed)
    layer = instantiate(cfg.model.memory, input_size=D).to(dtype)
    layer.eval()  # contract is about the deterministic map (dropout off)
    return layer


def test_every_model_has_small_sizes():
    assert set(MODELS) <= set(SMALL), f"add small sizes for {set(MODELS) - set(SMALL)}"
    assert {"gru", "lstm", "mlp"} <= set(MODELS)


def _x(seed=1, t=T):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, t, D, generator=g, dtype=torch.float64)


def _close(a, b, tol=1e-9):
    assert torch.allclose(a, b, atol=tol, rtol=tol), (a - b).abs().max().item()


def _states_close(s1, s2):
    assert len(s1) == len(s2)
    for a, b in zip(s1, s2):
        assert a.shape == b.shape
        _close(a.double(), b.double())


def _seeded(layer, fn, seed=123):
    """Run fn with a fixed torch RNG (SHM draws θ rows at random on every call)."""
    torch.manual_seed(seed)
    return fn()


@pytest.fixture(params=MODELS)
def layer(request):
    return build(request.param)


def test_shapes_and_state(layer):
    x = _x()
    s0 = layer.initial_state(B, x.device)
    assert isinstance(s0, tuple)
    y, s = layer(x)
    assert y.shape == (B, T, layer.output_size)
    assert [t.shape for t in s] == [t.shape for t in s0]
    assert all(t.shape[0] == B for t in s0)
    y1, s1 = layer.step(x[:, 0], s0)
    assert y1.shape == (B, layer.output_size)
    assert [t.shape for t in s1] == [t.shape for t in s0]


def test_forward_equals_step_loop(layer):
    x = _x()
    y, s = layer(x)
    state = layer.initial_state(B, x.device)
    ys = []
    for t in range(T):
        yt, state = layer.step(x[:, t], state)
        ys.append(yt)
    _close(y, torch.stack(ys, 1))
    _states_close(s, state)


def test_split_forward_equals_one_forward(layer):
    x = _x()
    y, s = layer(x)
    ya, sa = layer(x[:, :4])
    yb, sb = layer(x[:, 4:], sa)
    _close(y, torch.cat([ya, yb], 1))
    _states_close(s, sb)


def test_resets_equal_independent_segments(layer):
    x = _x()
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[0, 3] = True
    reset[1, 5] = True
    reset[1, 7] = True
    reset[:, 0] = True
    y, _ = layer(x, layer.initial_state(B), reset)
    for b in range(B):
        cuts = [t for t in range(T) if reset[b, t]] + [T]
        for a, e in zip(cuts[:-1], cuts[1:]):
            ys, _ = layer(x[b:b + 1, a:e])
            _close(y[b:b + 1, a:e], ys)


def test_causality(layer):
    x = _x()
    y, _ = _seeded(layer, lambda: layer(x))
    x2 = x.clone()
    x2[:, 5:] += torch.randn_like(x2[:, 5:])
    y2, _ = _seeded(layer, lambda: layer(x2))
    _close(y[:, :5], y2[:, :5])
    assert not torch.allclose(y[:, 5:], y2[:, 5:])


def test_batch_rows_independent(layer):
    x = _x()
    y, _ = _seeded(layer, lambda: layer(x))
    x2 = x.clone()
    x2[1] += 1.0
    y2, _ = _seeded(layer, lambda: layer(x2))
    _close(y[0], y2[0])
    _close(y[2], y2[2])


# The gradient test samples θ rows in SHM (with a fixed row, only Θ[0] could receive gradient).
GRAD_OVERRIDES = {"shm": {"memory": {"theta_sampling": "random"}}}


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_gradient(name):
    layer = build(name, extra=GRAD_OVERRIDES.get(name))
    x = _x(t=16).requires_grad_(False)
    xb = torch.cat([x] * 8, 0)  # a larger batch so random θ rows all get used
    y, _ = layer(xb)
    y.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), f"no gradient for {name}"


def test_unread_forms_are_forward_without_the_readout(layer):
    """forward = readout(forward_unread), step = readout(step_unread); no readout: unread = plain."""
    x = _x()
    y, s = _seeded(layer, lambda: layer(x))
    z, s_z = _seeded(layer, lambda: layer.forward_unread(x))
    readout = layer.readout
    if readout is None:
        _close(z, y)
    else:
        assert isinstance(readout, torch.nn.Linear) and readout.out_features == layer.output_size
        assert z.shape == (B, T, readout.in_features)
        _close(readout(z), y)
    _states_close(s, s_z)
    s0 = layer.initial_state(B, x.device)
    y1, s1 = _seeded(layer, lambda: layer.step(x[:, 0], s0))
    z1, s1_z = _seeded(layer, lambda: layer.step_unread(x[:, 0], s0))
    _close(y1, z1 if readout is None else readout(z1))
    _states_close(s1, s1_z)


def test_layers_ending_in_a_linear_expose_it():
    """The readout fold (src/agent.py) only pays off if the layers that can have it do."""
    assert {name for name in MODELS if build(name).readout is not None} == {"shm", "fwp", "mlstm", "s6"}


def test_resets_inside_a_chunk_with_a_carried_state(layer):
    """A rollout chunk as PPO stores it: the state carried in from the previous chunk (mid-episode),
    an episode start inside the chunk. One forward = the acting steps one at a time = a forward up
    to the reset (from the carried state) and a fresh forward from it."""
    _, s0 = _seeded(layer, lambda: layer(_x(seed=7, t=5)))  # a reachable mid-episode state
    x = _x(seed=2)
    r = 4
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[:, r] = True
    reset[1, 7] = True  # a second, short episode in one row
    y, s = layer(x, s0, reset)
    state, ys = tuple(t.clone() for t in s0), []  # GPT-2's step consumes its state in place
    for t in range(T):
        yt, state = layer.step(x[:, t], state, reset[:, t])
        ys.append(yt)
    _close(y, torch.stack(ys, 1))
    _states_close(s, state)
    ya, _ = layer(x[:, :r], s0)
    _close(y[:, :r], ya)
    for b in (0, 2):
        yb, sb = layer(x[b:b + 1, r:])
        _close(y[b:b + 1, r:], yb)
        _states_close(tuple(t[b:b + 1] for t in s), sb)
    _close(y[1:2, r:7], layer(x[1:2, r:7])[0])
    _close(y[1:2, 7:], layer(x[1:2, 7:])[0])
