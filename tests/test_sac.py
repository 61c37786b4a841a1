"""SAC targets and losses on a hand-checkable batch; the tanh-Gaussian log-probability."""
import math

import pytest
import torch

import src.algos.sac as sac_mod
from src.agent import RecurrentActorCritic
from src.algos.sac import SAC, shift_inputs
from torchkit.memory.rnn import GRU
from torchkit.nets import tanh_gaussian_sample

EMBED = {"action": 4, "reward": 4, "obs": 4, "current_obs": 4}


def make_agent():
    torch.manual_seed(0)
    return RecurrentActorCritic((3,), 2, EMBED, lambda d: GRU(d, 8), policy_layers=[16], q_layers=[16])


def set_constant_q(critic, c1, c2):
    for head, c in ((critic.q1, c1), (critic.q2, c2)):
        torch.nn.init.zeros_(head.last.weight)
        torch.nn.init.constant_(head.last.bias, c)


def test_shift_inputs_pads_previous_action_and_reward():
    act = torch.arange(6.0).view(1, 3, 2)
    rew = torch.tensor([[1.0, 2.0, 3.0]])
    pa, pr = shift_inputs(act, rew)
    assert pa.tolist() == [[[0, 0], [0, 1], [2, 3], [4, 5]]]
    assert pr.squeeze(-1).tolist() == [[0, 1, 2, 3]]


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    torch.manual_seed(1)
    mean, log_std = torch.randn(5, 3), torch.randn(5, 3) * 0.3
    torch.manual_seed(2)
    a, logp = tanh_gaussian_sample(mean, log_std)
    torch.manual_seed(2)
    z = mean + log_std.exp() * torch.randn_like(mean)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(z) - torch.log(1 - torch.tanh(z) ** 2 + 1e-6)
    assert torch.allclose(a, torch.tanh(z))
    assert torch.allclose(logp.squeeze(-1), ref.sum(-1), atol=1e-5)


def test_targets_and_losses_on_a_hand_checkable_batch(monkeypatch):
    """Constant Q heads (Q1 = 2, Q2 = 3, targets the same) and a fixed sampled log π = -0.5:
    y_t = r_t + (1 - d_t) γ (min(2, 3) - α(-0.5)), losses are masked means over valid steps."""
    agent = make_agent()
    set_constant_q(agent.critic, 2.0, 3.0)
    set_constant_q(agent.critic_target, 2.0, 3.0)
    algo = SAC(agent, gamma=0.5, tau=0.25, lr=1e-12, alpha_lr=0.1, init_alpha=0.2)

    def fixed_sample(mean, log_std, reparameterize=True):
        a = torch.tanh(mean) * 0 + 0.1 + 0 * mean  # keeps the graph to the actor
        return a, torch.full_like(mean[..., :1], -0.5) + 0 * mean[..., :1]

    monkeypatch.setattr(sac_mod, "tanh_gaussian_sample", fixed_sample)
    B, T = 2, 3
    batch = {"obs": torch.randn(B, T + 1, 3), "act": torch.rand(B, T, 2) * 2 - 1,
             "rew": torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.5, 0.0]]),
             "term": torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
             "mask": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])}
    stats = algo.update(batch)
    v = 2.0 - 0.2 * (-0.5)                           # min Q̄ − α log π = 2.1
    y = batch["rew"] + (1 - batch["term"]) * 0.5 * v
    m, n = batch["mask"], batch["mask"].sum()
    assert stats["qf1_loss"].item() == pytest.approx((((2.0 - y) ** 2) * m).sum().item() / n.item(), rel=1e-5)
    assert stats["qf2_loss"].item() == pytest.approx((((3.0 - y) ** 2) * m).sum().item() / n.item(), rel=1e-5)
    # policy loss = mean over valid steps of α log π − min(Q1, Q2) = 0.2 * -0.5 - 2
    assert stats["policy_loss"].item() == pytest.approx(-2.1, rel=1e-5)
    assert stats["alpha"].item() == pytest.approx(0.2)
    assert stats["entropy"].item() == pytest.approx(0.5)
    # α step: loss = −α (log π + H̄) with H̄ = −2 -> dL/dlogα = −α(−0.5 − 2) > 0, so α decreases
    assert algo.alpha.item() < 0.2
    assert algo.target_entropy == -2.0


def test_soft_target_update_moves_by_tau():
    agent = make_agent()
    before = [p.clone() for p in agent.critic_target.parameters()]
    with torch.no_grad():
        for p in agent.critic.parameters():
            p.add_(1.0)
    agent.soft_update_target(0.1)
    for b, p_t, p in zip(before, agent.critic_target.parameters(), agent.critic.parameters()):
        assert torch.allclose(p_t, 0.9 * b + 0.1 * p, atol=1e-6)


def test_update_trains_only_its_own_parameters():
    agent = make_agent()
    algo = SAC(agent)
    target_before = [p.clone() for p in agent.critic_target.parameters()]
    actor_before = [p.clone() for p in agent.actor.parameters()]
    batch = {"obs": torch.randn(4, 6, 3), "act": torch.rand(4, 5, 2) * 2 - 1, "rew": torch.rand(4, 5),
             "term": torch.zeros(4, 5), "mask": torch.ones(4, 5)}
    stats = algo.update(batch)
    assert all(math.isfinite(float(v)) for v in stats.values())
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    assert all(not p.requires_grad for p in agent.critic_target.parameters())
    moved = [not torch.equal(a, b) for a, b in zip(target_before, agent.critic_target.parameters())]
    assert any(moved)


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="gamma"):
        SAC(make_agent(), gamma=1.5)


def test_sac_learns_a_continuous_bandit_through_the_recurrent_agent():
    """One-step episodes, reward −(a − 0.5)² − (b + 0.3)²: after 400 updates on uniformly random
    actions the deterministic action is near (0.5, −0.3). Checks the direction of the whole chain
    (critic fit, reparameterised actor gradient through min Q, α tuning), not just its shapes."""
    agent = make_agent()
    algo = SAC(agent, lr=3e-3, alpha_lr=3e-3)
    g = torch.Generator().manual_seed(1)
    target = torch.tensor([0.5, -0.3])
    for _ in range(400):
        act = torch.rand(64, 1, 2, generator=g) * 2 - 1
        batch = {"obs": torch.ones(64, 2, 3), "act": act, "rew": -(act - target).pow(2).sum(-1),
                 "term": torch.ones(64, 1), "mask": torch.ones(64, 1)}
        algo.update(batch)
    state = agent.initial_actor_state(1)
    a, _ = agent.act(torch.zeros(1, 2), torch.zeros(1, 1), torch.ones(1, 3), state, deterministic=True)
    assert (a[0] - target).abs().max() < 0.1, a


def test_folded_readout_gives_the_same_agent_and_gradients():
    """Heads that fold SHM's widening readout into their first layer (fold_readout, the default)
    compute the same Q values, policy and parameter gradients as heads reading the memory output."""
    from torchkit.memory.shm import SHM

    def build(fold):
        torch.manual_seed(0)
        return RecurrentActorCritic((3,), 2, EMBED, lambda d: SHM(d, 16, mem_size=4, num_thetas=3),
                                    policy_layers=[16, 16], q_layers=[16, 16], fold_readout=fold).double()

    folded, plain = build(True), build(False)
    assert folded.critic.encoder.readout is folded.critic.encoder.memory.out and folded.actor.encoder.fold
    assert plain.critic.encoder.readout is None
    g = torch.Generator().manual_seed(1)
    pa, pr, obs = (torch.randn(2, 5, n, generator=g, dtype=torch.float64) for n in (2, 1, 3))
    act = torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * 2 - 1
    outs = []
    for agent in (folded, plain):
        torch.manual_seed(7)  # same θ rows drawn
        h = agent.critic.features(pa, pr, obs)
        q1, q2 = agent.critic.heads(h, obs, act)
        (mean, log_std), _ = agent.actor(pa, pr, obs)
        (q1.sum() + 2 * q2.sum() + mean.square().sum() + log_std.sum()).backward()
        state = agent.initial_actor_state(2)
        torch.manual_seed(8)
        (m1, _), _ = agent.actor.step(pa[:, 0], pr[:, 0], obs[:, 0], state)
        outs.append((q1, q2, mean, log_std, m1, [p.grad for p in agent.parameters() if p.requires_grad]))
    for a, b in zip(outs[0][:5], outs[1][:5]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(outs[0][5], outs[1][5]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
