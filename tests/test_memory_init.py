"""Memory init: each layer owns its init (reset_parameters re-creates it exactly); the reference's
blanket rule (agent.init=reference, the default) overwrites what each layer's docstring says."""
import math

import pytest
import torch
import torch.nn.functional as F

from src.agent import RecurrentActorCritic
from tests.test_memory_contract import MODELS, build


def build32(name, seed):
    """As test_memory_contract.build, in float32 (the draws of construction and of reset match)."""
    return build(name, seed, dtype=torch.float32)
from torchkit.memory import reference_init_, reference_init_targets


@pytest.mark.parametrize("name", MODELS)
def test_reset_parameters_recreates_the_layers_own_init(name):
    """Same seed: construction == perturb then reset_parameters() (no init happens elsewhere)."""
    fresh = build32(name, seed=5)
    layer = build32(name, seed=7)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(1.0)
    torch.manual_seed(5)
    layer.reset_parameters()
    for (n, a), b in zip(fresh.named_parameters(), layer.parameters()):
        assert torch.equal(a, b), n


# Parameters the reference rule leaves alone (everything else: weights orthogonal, biases zero).
KEPT = {"shm": {"theta", "norm.weight"}, "fwp": {"norm.weight"}, "s6": {"A_log", "D"}, "ffm": {"a", "b"},
        "gpt2": {"blocks.0.ln_1.weight", "blocks.0.ln_2.weight", "ln_f.weight"}}


@pytest.mark.parametrize("name", MODELS)
def test_reference_rule_targets(name):
    layer = build(name)
    zeroed, orthogonal = reference_init_targets(layer)
    names = {n for n, _ in layer.named_parameters()}
    assert names - set(zeroed) - set(orthogonal) == KEPT.get(name, set())
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    reference_init_(layer)
    for n, p in layer.named_parameters():
        if n in zeroed:
            assert not p.any(), n
        elif n in orthogonal:
            w = p.detach().flatten(1)
            eye = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            assert torch.allclose(eye, torch.eye(eye.shape[0], dtype=w.dtype), atol=1e-6), n
        else:
            assert torch.equal(p, before[n]), n


def test_agent_init_reference_overwrites_s6_delta_bias_and_layer_keeps_it():
    def s6(d):
        from torchkit.memory.s6 import S6
        return S6(d, 8, d_state=4, dt_min=1e-3, dt_max=0.1)
    biases = {}
    for init in ("reference", "layer"):
        torch.manual_seed(0)
        agent = RecurrentActorCritic((3,), 2, {"action": 4, "reward": 4, "obs": 8, "current_obs": 8}, s6,
                                     memory_init=init)
        biases[init] = agent.critic.encoder.memory.dt_proj.bias.detach()
    assert not biases["reference"].any()  # softplus(0) = 0.69 per initial step
    dt = F.softplus(biases["layer"])
    assert (dt >= 1e-3 - 1e-7).all() and (dt <= 0.1 + 1e-7).all()
    with pytest.raises(ValueError, match="agent.init=orthogonal: valid: reference, layer"):
        RecurrentActorCritic((3,), 2, {"action": 4, "reward": 4, "obs": 8, "current_obs": 8}, s6,
                             memory_init="orthogonal")
    assert math.isclose(F.softplus(torch.tensor(0.0)).item(), math.log(2), rel_tol=1e-6)
