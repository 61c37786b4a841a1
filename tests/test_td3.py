"""TD3: targets and losses on a hand-checkable batch, policy delay, clipped smoothing noise,
exploration noise, discrete-action refusal, checkpoint state and a tiny run through the loop."""
import math

import pytest
import torch

import src.algos.td3 as td3_mod
from src.agent import RecurrentActorCritic
from src.algos.td3 import TD3, smoothing_noise
from src.loop import Trainer
from tests.helpers import compose_cfg, read_csv
from tests.test_sac import EMBED, make_agent, set_constant_q


def batch_of(B=2, T=3):
    torch.manual_seed(5)
    return {"obs": torch.randn(B, T + 1, 3), "act": torch.rand(B, T, 2) * 2 - 1,
            "rew": torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.5, 0.0]])[:B, :T],
            "term": torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])[:B, :T],
            "mask": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])[:B, :T]}


def test_targets_and_losses_on_a_hand_checkable_batch():
    """Constant Q heads (Q1 = 2, Q2 = 3, targets the same): y_t = r_t + (1 − d_t) γ min(2, 3)
    whatever the smoothed target action; actor loss = −min(Q1, Q2) = −2 on its (delayed) step."""
    agent = make_agent()
    set_constant_q(agent.critic, 2.0, 3.0)
    set_constant_q(agent.critic_target, 2.0, 3.0)
    algo = TD3(agent, gamma=0.5, tau=0.25, lr=1e-12, policy_delay=1)
    batch = batch_of()
    stats = algo.update(batch)
    y = batch["rew"] + (1 - batch["term"]) * 0.5 * 2.0
    m, n = batch["mask"], batch["mask"].sum()
    assert stats["qf1_loss"].item() == pytest.approx((((2.0 - y) ** 2) * m).sum().item() / n.item(), rel=1e-5)
    assert stats["qf2_loss"].item() == pytest.approx((((3.0 - y) ** 2) * m).sum().item() / n.item(), rel=1e-5)
    assert stats["policy_loss"].item() == pytest.approx(-2.0, rel=1e-5)
    assert set(stats) == set(TD3.STATS) and algo.alpha.item() == 0.0


def test_target_uses_the_target_actor_with_smoothing_noise(monkeypatch):
    """A critic target that reads the action (Q̄ = Σ a through a zero-hidden head) makes y depend
    on the smoothed target action: with the noise replaced by a constant 0.3,
    ã = clip(tanh(mean of the target actor) + 0.3, −1, 1)."""
    agent = make_agent()
    algo = TD3(agent, gamma=1.0, lr=1e-12, policy_delay=1)
    monkeypatch.setattr(td3_mod, "smoothing_noise", lambda like, std, clip: torch.full_like(like, 0.3))
    seen = {}
    heads = agent.critic_target.heads

    def spy(h, obs, action=None, obs_emb=None):
        seen["a"] = action.clone()
        return heads(h, obs, action, obs_emb)

    monkeypatch.setattr(agent.critic_target, "heads", spy)
    batch = batch_of()
    from src.algos.sac import shift_inputs
    pa, pr = shift_inputs(batch["act"], batch["rew"])
    with torch.no_grad():
        (mean, _), _ = algo.actor_target(pa, pr, batch["obs"])
    algo.update(batch)
    assert torch.allclose(seen["a"], (torch.tanh(mean[:, 1:]) + 0.3).clamp(-1, 1), atol=1e-6)


def test_smoothing_noise_is_clipped():
    torch.manual_seed(0)
    noise = smoothing_noise(torch.zeros(10_000), std=0.2, clip=0.5)
    assert noise.abs().max().item() == pytest.approx(0.5)     # N(0, 0.2²) exceeds 0.5 in ~1% of draws
    assert 0.15 < noise.std().item() < 0.21
    wide = smoothing_noise(torch.zeros(1000), std=10.0, clip=0.5)
    assert wide.abs().max().item() <= 0.5 and (wide.abs() == 0.5).float().mean() > 0.9


def test_policy_delay_keeps_the_actor_and_targets_still_on_non_delayed_steps():
    agent = make_agent()
    algo = TD3(agent, policy_delay=2)

    def snapshot():
        return [[p.clone() for p in m.parameters()] for m in (agent.actor, algo.actor_target, agent.critic_target,
                                                               agent.critic)]

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b))

    s0 = snapshot()
    first = algo.update(batch_of())
    s1 = snapshot()
    assert same(s0[0], s1[0]) and same(s0[1], s1[1]) and same(s0[2], s1[2])  # actor, targets unchanged
    assert not same(s0[3], s1[3])                                              # the critic stepped
    assert first["policy_loss"].item() == 0.0                                  # no actor step yet
    second = algo.update(batch_of())
    s2 = snapshot()
    assert not same(s1[0], s2[0]) and not same(s1[1], s2[1]) and not same(s1[2], s2[2])
    assert second["policy_loss"].item() != 0.0 and algo.num_updates == 2
    third = algo.update(batch_of())                                            # repeats the last actor stats
    assert third["policy_loss"].item() == second["policy_loss"].item()
    assert same(s2[0], [p for p in agent.actor.parameters()])


def test_exploration_noise_when_acting():
    agent = make_agent()
    TD3(agent, exploration_noise=0.1)
    state = agent.initial_actor_state(4096)
    args = (torch.zeros(4096, 2), torch.zeros(4096, 1), torch.randn(1, 3).expand(4096, 3))
    det, _ = agent.act(*args, state, deterministic=True)
    torch.manual_seed(0)
    noisy, _ = agent.act(*args, state, deterministic=False)
    assert noisy.abs().max() <= 1.0
    diff = noisy - det
    assert 0.08 < diff.std().item() < 0.12 and abs(diff.mean().item()) < 0.01


def test_bad_input_is_refused():
    from torchkit.memory.rnn import GRU
    discrete = RecurrentActorCritic((3,), 2, EMBED, lambda d: GRU(d, 8), discrete=True)
    with pytest.raises(ValueError, match="algo=sacd"):
        TD3(discrete)
    with pytest.raises(ValueError, match="policy_delay"):
        TD3(make_agent(), policy_delay=0)
    with pytest.raises(ValueError, match="gamma"):
        TD3(make_agent(), gamma=2.0)


def test_td3_on_a_discrete_env_names_sacd(tmp_path):
    cfg = compose_cfg(["task=pomdp", "env=cartpole_v", "algo=td3", "logger=none"])
    with pytest.raises(ValueError, match="algo=td3 needs a continuous.*algo=sacd"):
        Trainer(cfg, tmp_path)


def test_state_dict_round_trip_carries_the_update_counter_and_target_actor():
    a1 = make_agent()
    algo = TD3(a1)
    for _ in range(3):
        algo.update(batch_of())
    a2 = make_agent()
    a2.load_state_dict(a1.state_dict())
    other = TD3(a2)
    other.load_state_dict(algo.state_dict())
    assert other.num_updates == 3
    assert all(torch.equal(p, q) for p, q in zip(other.actor_target.parameters(), algo.actor_target.parameters()))
    # the next update is a critic-only step in both (4th is delayed: both step the actor)
    torch.manual_seed(1)
    s1 = algo.update(batch_of())
    torch.manual_seed(1)
    s2 = other.update(batch_of())
    for k in s1:  # (Adam's reloaded step counter may round differently in the last bits)
        assert s1[k].item() == pytest.approx(s2[k].item(), rel=1e-4, abs=1e-5)


def test_tiny_td3_run_through_the_loop_and_resume(tmp_path, monkeypatch):
    from tests.test_pomdp_train import TINY_POMDP
    from tests.test_train import run_until_signal
    over = TINY_POMDP + ["env=pendulum_v", "algo=td3", "env.kwargs.max_episode_steps=20", "train.num_iters=4",
                         "train.warmup_updates=3"]
    cfg = compose_cfg(over)
    trainer = Trainer(cfg, tmp_path / "a")
    assert type(trainer.algo).__name__ == "TD3" and trainer.agent.exploration_noise == 0.1
    trainer.run(cfg.logger)
    rows = read_csv(tmp_path / "a" / "progress.csv")
    assert [int(r["iteration"]) for r in rows] == [0, 1, 3, 4]
    assert [int(r["updates"]) for r in rows] == [3, 5, 9, 11]
    assert trainer.algo.num_updates == 11
    for r in rows:
        assert math.isfinite(float(r["eval/return_eval"]))
    assert math.isfinite(float(rows[-1]["train/policy_loss"]))
    assert "train/alpha_now" not in rows[0] and "train/alpha" not in rows[0]  # TD3 has no entropy temperature
    # stopped mid-iteration and resumed: the same rows (the update counter travels in the checkpoint)
    assert run_until_signal(compose_cfg(over), tmp_path / "b", 6, monkeypatch).updates == 6
    resumed = Trainer(compose_cfg(over), tmp_path / "b")
    resumed.run(cfg.logger, resume=True)
    assert resumed.algo.num_updates == 11
    b = read_csv(tmp_path / "b" / "progress.csv")
    skip = {"time_s", "perf/updates_per_s", "perf/env_steps_per_s"}
    assert [{k: v for k, v in r.items() if k not in skip} for r in rows] == \
        [{k: v for k, v in r.items() if k not in skip} for r in b]
