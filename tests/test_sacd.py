"""SAC-Discrete targets and losses on a hand-checkable batch, the discrete/image agent (CNN shapes),
and the algorithm / action-space errors."""
import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from src.agent import RecurrentActorCritic
from src.algos.sacd import SACDiscrete, categorical_probs
from src.build import check_algo_and_action_space
from torchkit.memory.rnn import GRU
from torchkit.nets import ImageEncoder

EMBED = {"action": 4, "reward": 4, "obs": 4, "current_obs": 4}
IMAGE_EMBED = {"action": 0, "reward": 0, "obs": 100, "current_obs": 100}
A = 4


def make_agent(obs_shape=(3,), embed=EMBED):
    torch.manual_seed(0)
    return RecurrentActorCritic(obs_shape, A, embed, lambda d: GRU(d, 8), policy_layers=[16], q_layers=[16],
                                discrete=True)


def set_constant_q(critic, q1, q2):
    for head, c in ((critic.q1, q1), (critic.q2, q2)):
        torch.nn.init.zeros_(head.last.weight)
        with torch.no_grad():
            head.last.bias.copy_(torch.tensor(c))


def set_constant_logits(actor, logits):
    torch.nn.init.zeros_(actor.head.last.weight)
    with torch.no_grad():
        actor.head.last.bias.copy_(torch.tensor(logits))


def one_hot(idx):
    return torch.nn.functional.one_hot(torch.tensor(idx), A).float()


def test_categorical_probs_clamps_the_log():
    p, logp = categorical_probs(torch.tensor([[0.0, 0.0, -100.0, 100.0]]))
    assert torch.allclose(p.sum(-1), torch.ones(1))
    assert logp.min().item() == pytest.approx(math.log(1e-8))
    assert torch.isfinite(logp).all()


def test_targets_and_losses_on_a_hand_checkable_batch():
    """Constant Q heads (Q1 = [1,2,3,4], Q2 = [2,1,4,0], targets the same), constant policy p:
    V = Σ_a p (min Q − α log p); y = r + (1−d) γ V; prediction Q_i at the stored action;
    policy loss Σ_a p (α log p − min Q); all masked means over valid steps."""
    agent = make_agent()
    q1c, q2c = [1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 0.0]
    set_constant_q(agent.critic, q1c, q2c)
    set_constant_q(agent.critic_target, q1c, q2c)
    logits = [0.5, -0.3, 1.2, 0.0]
    set_constant_logits(agent.actor, logits)
    alpha, gamma = 0.2, 0.5
    algo = SACDiscrete(agent, gamma=gamma, tau=0.25, lr=1e-12, init_alpha=alpha)

    B, T = 2, 3
    actions = [[0, 2, 3], [1, 1, 0]]
    batch = {"obs": torch.randn(B, T + 1, 3), "act": one_hot(actions),
             "rew": torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.5, 0.0]]),
             "term": torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
             "mask": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])}
    stats = algo.update(batch)

    p = torch.softmax(torch.tensor(logits), -1)
    logp = p.log()
    min_q = torch.minimum(torch.tensor(q1c), torch.tensor(q2c))
    v = (p * (min_q - alpha * logp)).sum().item()
    y = batch["rew"] + (1 - batch["term"]) * gamma * v
    m, n = batch["mask"], batch["mask"].sum().item()
    q1_pred = torch.tensor(q1c)[torch.tensor(actions)]
    q2_pred = torch.tensor(q2c)[torch.tensor(actions)]
    assert stats["qf1_loss"].item() == pytest.approx((((q1_pred - y) ** 2) * m).sum().item() / n, rel=1e-5)
    assert stats["qf2_loss"].item() == pytest.approx((((q2_pred - y) ** 2) * m).sum().item() / n, rel=1e-5)
    assert stats["policy_loss"].item() == pytest.approx((p * (alpha * logp - min_q)).sum().item(), rel=1e-5)
    assert stats["entropy"].item() == pytest.approx(-(p * logp).sum().item(), rel=1e-5)
    assert stats["alpha"].item() == pytest.approx(alpha)
    assert algo.alpha.item() == pytest.approx(alpha)  # fixed α by default
    assert set(stats) == set(SACDiscrete.STATS)


def test_auto_alpha_moves_alpha_toward_the_target_entropy():
    agent = make_agent()
    set_constant_logits(agent.actor, [5.0, 0.0, 0.0, 0.0])  # entropy well below 0.9 log 4
    algo = SACDiscrete(agent, auto_alpha=True, init_alpha=1.0, target_entropy_ratio=0.9, alpha_lr=0.1)
    assert algo.target_entropy == pytest.approx(0.9 * math.log(A))
    batch = {"obs": torch.randn(2, 5, 3), "act": one_hot([[0, 1, 2, 3]] * 2), "rew": torch.rand(2, 4),
             "term": torch.zeros(2, 4), "mask": torch.ones(2, 4)}
    algo.update(batch)
    assert algo.alpha.item() > 1.0  # too little entropy: α grows


def test_update_trains_only_its_own_parameters_and_checkpoints():
    agent = make_agent()
    algo = SACDiscrete(agent)
    target_before = [p.clone() for p in agent.critic_target.parameters()]
    actor_before = [p.clone() for p in agent.actor.parameters()]
    batch = {"obs": torch.randn(4, 6, 3), "act": one_hot(np.random.default_rng(0).integers(A, size=(4, 5)).tolist()),
             "rew": torch.rand(4, 5), "term": torch.zeros(4, 5), "mask": torch.ones(4, 5)}
    stats = algo.update(batch)
    assert all(math.isfinite(float(v)) for v in stats.values())
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    assert all(not p.requires_grad for p in agent.critic_target.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(target_before, agent.critic_target.parameters()))
    other = SACDiscrete(make_agent())
    other.load_state_dict(algo.state_dict())
    assert other.alpha.item() == pytest.approx(algo.alpha.item())


def test_sacd_rejects_a_continuous_agent_and_bad_values():
    cont = RecurrentActorCritic((3,), 2, EMBED, lambda d: GRU(d, 8), policy_layers=[16], q_layers=[16])
    with pytest.raises(ValueError, match="discrete=True"):
        SACDiscrete(cont)
    with pytest.raises(ValueError, match="target_entropy_ratio"):
        SACDiscrete(make_agent(), target_entropy_ratio=1.5)
    with pytest.raises(ValueError, match="gamma"):
        SACDiscrete(make_agent(), gamma=2.0)


def test_wrong_algorithm_for_the_action_space_is_a_clear_error():
    with pytest.raises(ValueError, match=r"algo=sac needs a continuous \(Box\) action space but env "
                                         r"visual_match has Discrete\(4\): use algo=sacd .* or algo=ppo"):
        check_algo_and_action_space("sac", "visual_match", spaces.Discrete(4))
    with pytest.raises(ValueError, match="algo=sacd needs a discrete action space but env wind has Box.*use algo=sac or algo=td3"):
        check_algo_and_action_space("sacd", "wind", spaces.Box(-1, 1, (2,)))
    with pytest.raises(ValueError, match="unknown algorithm"):
        check_algo_and_action_space("ppo", "wind", spaces.Box(-1, 1, (2,)))
    assert check_algo_and_action_space("sacd", "tmaze", spaces.Discrete(4)) is True
    assert check_algo_and_action_space("sac", "wind", spaces.Box(-1, 1, (2,))) is False


# ---------------------------------------------------------------- image encoder and discrete agent
def test_image_encoder_shapes_parameters_and_scaling():
    enc = ImageEncoder((5, 5, 3), 100)
    assert sum(p.numel() for p in enc.parameters()) == 15_132  # 104 + 528 + 14,500 (reference)
    x = torch.randint(0, 256, (2, 7, 5, 5, 3), dtype=torch.uint8)
    y = enc(x)
    assert y.shape == (2, 7, 100)
    assert torch.allclose(enc(x.float()), y)  # uint8 and float pixels give the same embedding
    # HWC -> CHW and /255, then the convolutions of the reference
    chw = x.reshape(-1, 5, 5, 3).permute(0, 3, 1, 2).float() / 255
    conv1, conv2 = enc.conv[0], enc.conv[2]
    ref = enc.fc(torch.relu(conv2(torch.relu(conv1(chw)))).flatten(1)).reshape(2, 7, 100)
    assert torch.allclose(y, ref, atol=1e-6)
    assert conv1.in_channels == 3 and conv1.out_channels == 8 and conv1.kernel_size == (2, 2)
    assert conv2.out_channels == 16 and enc.fc.in_features == 144
    with pytest.raises(ValueError, match="too small"):
        ImageEncoder((2, 2, 3), 10)


def test_image_agent_shares_one_cnn_and_outputs_action_values():
    agent = make_agent((5, 5, 3), IMAGE_EMBED)
    assert isinstance(agent.actor.encoder.obs_emb, ImageEncoder)
    assert agent.actor.current_obs_emb is agent.actor.encoder.obs_emb
    assert agent.critic.shortcut is agent.critic.encoder.obs_emb
    assert agent.critic_target.shortcut is agent.critic_target.encoder.obs_emb  # deepcopy keeps the sharing
    assert agent.critic.encoder.input_size == 100
    assert agent.critic.q1.last.out_features == A and agent.critic.q1.body[0].in_features == 8 + 100
    B, T = 3, 6
    obs = torch.randint(0, 256, (B, T + 1, 5, 5, 3), dtype=torch.uint8)
    pa, pr = torch.zeros(B, T + 1, A), torch.zeros(B, T + 1, 1)
    logits, _ = agent.actor(pa, pr, obs)
    assert logits.shape == (B, T + 1, A)
    h = agent.critic.features(pa, pr, obs)
    q1, q2 = agent.critic.heads(h, obs)
    assert q1.shape == q2.shape == (B, T + 1, A)
    # the one-CNN-pass paths equal embedding the observation twice
    torch.testing.assert_close(logits, agent.actor.dist_params(agent.actor.encoder(pa, pr, obs)[0], obs))
    for rows in (slice(1, None), slice(0, T)):
        for a, b in zip(agent.critic.action_values(pa, pr, obs, rows), agent.critic.heads(h[:, rows], obs[:, rows])):
            torch.testing.assert_close(a, b)
    # one SAC-D update on pixels
    batch = {"obs": obs.float(), "act": one_hot(np.random.default_rng(1).integers(A, size=(B, T)).tolist()),
             "rew": torch.rand(B, T), "term": torch.zeros(B, T), "mask": torch.ones(B, T)}
    stats = SACDiscrete(agent).update(batch)
    assert all(math.isfinite(float(v)) for v in stats.values())


def test_discrete_vector_agent_critic_shortcut_embeds_the_observation_only():
    agent = make_agent()
    shortcut = agent.critic.shortcut.net[0]
    assert shortcut.in_features == 3 and shortcut.out_features == agent.critic.encoder.input_size
    assert agent.actor.head.last.out_features == A


def test_act_returns_one_hot_actions_and_argmax_when_deterministic():
    agent = make_agent()
    set_constant_logits(agent.actor, [0.0, 3.0, 0.0, 0.0])
    state = agent.initial_actor_state(5)
    obs, pa, pr = torch.randn(5, 3), torch.zeros(5, A), torch.zeros(5, 1)
    a, _ = agent.act(pa, pr, obs, state, deterministic=True)
    assert a.shape == (5, A) and torch.equal(a.sum(-1), torch.ones(5))
    assert (a.argmax(-1) == 1).all()
    torch.manual_seed(0)
    samples = torch.cat([agent.act(pa, pr, obs, state)[0] for _ in range(40)])
    assert torch.equal(samples.sum(-1), torch.ones(200))
    assert len(set(samples.argmax(-1).tolist())) > 1  # stochastic acting samples other actions too
