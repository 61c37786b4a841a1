"""Recurrent PPO: GAE and the losses on hand-checkable numbers, the KL rule, the memory reset at
episode starts inside a chunk, rollouts whose sequence forward reproduces the acting steps, tiny
end-to-end runs and an exact resume."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

pytest.importorskip("popgym")

import src.algos.ppo as ppo_module  # noqa: E402
from src.algos.ppo import adapt_kl_coef, gae, ppo_loss  # noqa: E402
from src.ppo_agent import PPOAgent, episode_steps  # noqa: E402
from src.ppo_loop import PPOTrainer  # noqa: E402
from tests.helpers import compose_cfg, read_csv  # noqa: E402
from torchkit.memory.rnn import GRU  # noqa: E402
from torchkit.memory.shm import SHM  # noqa: E402

TINY = ["task=popgym", "env=repeat_previous_easy", "logger=none", "progress_bar=false", "train.num_envs=4",
        "train.rollout_len=64", "train.env_steps=512", "algo.epochs=2", "algo.num_minibatches=2",
        "eval.interval=1", "eval.num_episodes=2", "model.width=8", "ppo_agent.pre_layers=[16]",
        "ppo_agent.post_layers=[8]", "device=cpu"]


def test_gae_by_hand_with_an_episode_end_inside_the_chunk():
    # one env, T = 3, the episode ends with step 1 (obs 2 starts a new one), γ = λ = 0.5, V_3 = 2
    r, v = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[0.5], [1.0], [1.5]])
    done = torch.tensor([[0.0], [1.0], [0.0]])
    adv, ret = gae(r, v, done, torch.tensor([2.0]), gamma=0.5, lam=0.5)
    # δ2 = 3 + .5·2 − 1.5 = 2.5; δ1 = 2 − 1 = 1 (no bootstrap across the end); δ0 = 1 + .5·1 − .5 = 1
    # A2 = 2.5, A1 = 1 (A2 not carried over the end), A0 = 1 + .25·1 = 1.25
    assert adv[:, 0].tolist() == pytest.approx([1.25, 1.0, 2.5])
    assert ret[:, 0].tolist() == pytest.approx([1.75, 2.0, 4.0])


def test_gae_with_lambda_one_is_the_discounted_return_to_the_episode_end():
    torch.manual_seed(0)
    T, gamma = 6, 0.9
    r, v = torch.randn(T, 2), torch.randn(T, 2)
    done = torch.zeros(T, 2)
    done[2, 0] = 1.0  # env 0: episodes [0..2], [3..5]; env 1: one episode, bootstrapped with V_T
    last = torch.tensor([0.7, -0.3])
    _, ret = gae(r, v, done, last, gamma=gamma, lam=1.0)
    want = torch.zeros(T, 2)
    for i in range(2):
        g = float(last[i])
        for t in reversed(range(T)):
            g = float(r[t, i]) + (0.0 if done[t, i] else gamma * g)
            want[t, i] = g
    assert torch.allclose(ret, want, atol=1e-5)


def test_clipped_losses_entropy_and_kl_by_hand():
    # old policy uniform over 2 actions; new p(a=0) = 0.8, so the ratio of action 0 is 1.6
    old = torch.zeros(3, 2)
    new = torch.log(torch.tensor([[0.8, 0.2]] * 3))
    actions = torch.tensor([0, 0, 0])
    adv = torch.tensor([1.0, -1.0, 100.0])  # position 2 is masked out
    values, old_values, returns = torch.tensor([1.0, 1.0, 9.0]), torch.zeros(3), torch.tensor([3.0, 3.0, 0.0])
    mask = torch.tensor([1.0, 1.0, 0.0])
    kw = dict(clip=0.2, vf_coef=0.5, ent_coef=0.1, kl_coef=0.2, mask=mask)
    loss, s = ppo_loss(new, values, actions, old, old_values, adv, returns, **kw)
    # A > 0: min(1.6, 1.2)·1 = 1.2; A < 0: min(−1.6, −1.2) = −1.6 -> loss mean(−1.2, 1.6) = 0.2
    assert float(s["policy_loss"]) == pytest.approx(0.2)
    assert float(s["value_loss"]) == pytest.approx(4.0)        # (1 − 3)²
    ent = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    kl = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert float(s["entropy"]) == pytest.approx(ent, rel=1e-5)
    assert float(s["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(s["clip_frac"]) == pytest.approx(1.0)
    assert float(loss) == pytest.approx(0.2 + 0.5 * 4.0 - 0.1 * ent + 0.2 * kl, rel=1e-5)
    # value clips: PPO2's around V_old = 0 (c = 0.5: V -> 0.5, (0.5 − 3)² = 6.25 > 4), RLlib's at 3
    _, s = ppo_loss(new, values, actions, old, old_values, adv, returns, clip=0.2, value_clip=0.5, mask=mask)
    assert float(s["value_loss"]) == pytest.approx(6.25)
    _, s = ppo_loss(new, values, actions, old, old_values, adv, returns, clip=0.2, vf_loss_clip=3.0, mask=mask)
    assert float(s["value_loss"]) == pytest.approx(3.0)


def test_unclipped_ratio_gradient_is_the_policy_gradient():
    logits = torch.zeros(1, 3, requires_grad=True)
    loss, _ = ppo_loss(logits, torch.zeros(1), torch.tensor([1]), torch.zeros(1, 3), torch.zeros(1),
                       torch.tensor([2.0]), torch.zeros(1), clip=0.2, vf_coef=0.0)
    loss.backward()
    # at ratio 1: ∂(−ρA)/∂logits = −A (onehot(a) − p) = −2 ([0, 1, 0] − 1/3)
    assert logits.grad[0].tolist() == pytest.approx([2 / 3, -4 / 3, 2 / 3])


def test_kl_coefficient_rule():
    assert adapt_kl_coef(0.2, 0.03, 0.01) == pytest.approx(0.3)
    assert adapt_kl_coef(0.2, 0.004, 0.01) == pytest.approx(0.1)
    assert adapt_kl_coef(0.2, 0.01, 0.01) == 0.2


@pytest.mark.parametrize("memory", [lambda d: GRU(d, 8, backend="torch"),
                                    lambda d: SHM(d, 8, mem_size=4, theta_sampling="fixed", backend="eager")])
def test_sequence_forward_with_resets_equals_steps_and_separate_episodes(memory):
    torch.manual_seed(0)
    agent = PPOAgent(5, 3, memory, pre_layers=[6], post_layers=[7]).double()
    obs = torch.randn(2, 7, 5, dtype=torch.float64)
    reset = torch.zeros(2, 7, dtype=torch.bool)
    reset[0, 3] = reset[1, 5] = True  # a new episode inside the chunk
    s0 = tuple(torch.randn_like(s) for s in agent.initial_state(2))  # state carried from a previous chunk
    logits, values, state = agent(obs, s0, reset)
    s = s0
    for t in range(7):
        lt, vt, s = agent.step(obs[:, t], s, reset[:, t])
        assert torch.allclose(lt, logits[:, t]) and torch.allclose(vt, values[:, t])
    assert all(torch.allclose(a, b) for a, b in zip(s, state))
    # row 0 after its reset = a fresh episode from the initial state
    fresh, _, _ = agent(obs[:1, 3:], None, None)
    assert torch.allclose(fresh, logits[:1, 3:])


def test_rollout_masks_and_carried_state_reproduce_the_acting_steps():
    """Chunks of 64 steps hold one episode end of RepeatPreviousEasy (51 steps) per env: ``first``
    follows the ends, and the sequence forward from the stored chunk-start state reproduces the
    logits and values the agent acted with, in the first chunk and in the next (state carried)."""
    cfg = compose_cfg(TINY + ["model=gru", "model.memory.backend=torch"])
    tr = PPOTrainer(cfg, "/nonexistent-not-written")
    for chunk in range(2):
        b, s0 = tr.collect()
        assert b["obs"].shape == (4, 64, 4) and b["first"].dtype == torch.bool
        assert torch.equal(b["first"][:, 1:], b["dones"][:, :-1].bool())
        assert b["dones"].sum() == 4 and (b["first"][:, 0].all() if chunk == 0 else not b["first"][:, 0].any())
        logits, values, _ = tr.agent(b["obs"], s0, b["first"])
        assert torch.allclose(logits, b["logits"], atol=1e-5) and torch.allclose(values, b["values"], atol=1e-5)
        _, ret = gae(b["rewards"].T, b["values"].T, b["dones"].T, torch.zeros(4), 0.99, 1.0)
        ends = b["dones"].bool()
        assert torch.allclose(b["returns"][ends], ret.T[ends])  # no bootstrap at an episode's end




def test_episode_steps_restart_at_resets_and_continue_the_carried_count():
    reset = torch.tensor([[False, False, True, False, False], [True, False, False, False, True]])
    t = episode_steps(torch.tensor([7, 3]), reset, 5)
    assert t.tolist() == [[7, 8, 0, 1, 2], [0, 1, 2, 3, 0]]
    assert episode_steps(torch.tensor([2]), None, 3).tolist() == [[2, 3, 4]]


@pytest.mark.parametrize("layout", ["memrl", "popgym"])
@pytest.mark.parametrize("memory", [lambda d: GRU(d, 8, backend="torch"),
                                    lambda d: SHM(d, 8, mem_size=4, theta_sampling="fixed", backend="eager")])
def test_time_embedding_agent_keeps_the_contract_over_chunks(memory, layout):
    """With the sine time code, the state = memory state + the episode's step counter: a chunk that
    starts mid-episode (state carried in) with an episode start inside it gives the acting steps'
    outputs, and the part after the reset equals a fresh episode (both agent layouts)."""
    torch.manual_seed(0)
    agent = PPOAgent(5, 3, memory, pre_layers=[6, 4], post_layers=[7], time_embedding="sine",
                     layout=layout).double()
    obs = torch.randn(2, 9, 5, dtype=torch.float64)
    reset = torch.zeros(2, 9, dtype=torch.bool)
    reset[0, 3] = reset[1, 6] = True
    _, _, s0 = agent(torch.randn(2, 5, 5, dtype=torch.float64))  # 5 steps into an episode
    assert s0[-1].tolist() == [5, 5]
    logits, values, state = agent(obs, s0, reset)
    s = s0
    for t in range(9):
        lt, vt, s = agent.step(obs[:, t], s, reset[:, t])
        assert torch.allclose(lt, logits[:, t]) and torch.allclose(vt, values[:, t])
    assert all(torch.equal(a, b) if a.dtype == torch.long else torch.allclose(a, b) for a, b in zip(s, state))
    assert state[-1].tolist() == [6, 3]
    fresh, _, _ = agent(obs[:1, 3:])
    assert torch.allclose(fresh, logits[:1, 3:])
    # the code depends on the step: the same observation at steps 0 and 4 of an episode differs
    same = obs[:1, :1].expand(1, 5, 5)
    out, _, _ = agent(same)
    assert not torch.allclose(out[0, 0], out[0, 4])


def test_popgym_shm_sees_the_episode_step_and_gru_does_not():
    """The SHM paper's POPGym script gives SHM (only) POPGym's sine time embedding; without it SHM's
    keys, queries and decays see only the current card, and RepeatPrevious stays near random play
    (docs/results/popgym)."""
    shm, gru = (compose_cfg(["task=popgym", f"model={m}"]) for m in ("shm", "gru"))
    assert shm.ppo_agent.time_embedding == "sine" and gru.ppo_agent.time_embedding is None
    with pytest.raises(ValueError, match="time_embedding"):
        PPOAgent(4, 2, lambda d: GRU(d, 8), time_embedding="learned")


def test_popgym_layout_is_popgyms_base_model():
    """layout=popgym: Linear + LayerNorm (no affine, no ReLU) first, orthogonal hidden weights, each
    head a linear Linear(P, P) then a final layer from N(0, 0.01²); unknown layouts are an error."""
    torch.manual_seed(0)
    agent = PPOAgent(40, 4, lambda d: GRU(d, 16, backend="torch"), pre_layers=[128, 64], post_layers=[64],
                     layout="popgym")
    first = agent.pre[1]
    assert isinstance(first, torch.nn.LayerNorm) and not first.elementwise_affine
    assert isinstance(agent.pre[3], torch.nn.ReLU)
    x = agent.pre[:2](torch.randn(10, 40))
    assert torch.allclose(x.mean(-1), torch.zeros(10), atol=1e-5) and (x < 0).any()  # normalised, not rectified
    for lin in (agent.pre[0], agent.pre[2], agent.post[0], agent.pi[0], agent.v[0]):
        w = lin.weight
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-5)
    for head, out in ((agent.pi, 4), (agent.v, 1)):
        assert [type(m) for m in head] == [torch.nn.Linear, torch.nn.Linear] and head[1].out_features == out
    finals = torch.cat([agent.pi[1].weight.flatten(), agent.v[1].weight.flatten()])
    assert 0.005 < finals.std() < 0.015
    logits, values, _ = agent(torch.randn(3, 5, 40))
    assert logits.shape == (3, 5, 4) and values.shape == (3, 5) and logits.abs().max() < 0.2
    with pytest.raises(ValueError, match=r"layout=.rllib.*memrl \| popgym"):
        PPOAgent(4, 2, lambda d: GRU(d, 8), layout="rllib")


@pytest.mark.parametrize("model", ["gru", "shm"])
def test_ratio_is_one_before_the_first_gradient_step(model, monkeypatch):
    """The policy ratio of the first minibatch of an update (before any optimiser step) is 1: the
    stored chunk-start states, resets and actions reproduce the acting distribution with the
    model's own (fast) kernels, in the first chunk and in a later one (state carried)."""
    cfg = compose_cfg(TINY + [f"model={model}"])
    tr = PPOTrainer(cfg, "/nonexistent-not-written")
    seen = []

    def recording_loss(logits, values, actions, old_logits, *args, **kwargs):
        if not seen:
            lp = torch.log_softmax(logits, -1).gather(-1, actions.long().unsqueeze(-1))
            old = torch.log_softmax(old_logits, -1).gather(-1, actions.long().unsqueeze(-1))
            seen.append((lp - old).exp().detach())
        return ppo_loss(logits, values, actions, old_logits, *args, **kwargs)

    monkeypatch.setattr(ppo_module, "ppo_loss", recording_loss)
    for chunk in range(3):
        seen.clear()
        batch, s0 = tr.collect()
        tr.algo.update(batch, s0)
        assert seen and torch.allclose(seen[0], torch.ones_like(seen[0]), rtol=0, atol=1e-5), \
            (chunk, (seen[0] - 1).abs().max().item())


@pytest.mark.parametrize("model", ["gru", "shm"])
def test_tiny_run_writes_progress_csv(tmp_path, model):
    cfg = compose_cfg(TINY + [f"model={model}"])
    metrics = PPOTrainer(cfg, tmp_path).run(cfg.logger)
    rows = read_csv(tmp_path / "progress.csv")
    assert [int(r["env_steps"]) for r in rows] == [256, 512]
    assert [int(r["updates"]) for r in rows] == [4, 8]
    for r in rows:
        assert -1.0 <= float(r["eval/return_train"]) <= 1.0 and -1.0 <= float(r["eval/return_eval"]) <= 1.0
        assert float(r["perf/env_steps_per_s"]) > 0 and math.isfinite(float(r["train/policy_loss"]))
    assert float(rows[1]["eval/mmer"]) == max(float(r["eval/return_train"]) for r in rows)
    assert (tmp_path / "checkpoints" / "last.pt").exists() and "eval/mmer" in metrics


VOLATILE = {"time_s", "perf/env_steps_per_s", "perf/collect_steps_per_s", "perf/updates_per_s"}


# algo.lr_schedule overrides -> train/lr of the 4 rollouts, as multiples of algo.lr or, for a list of
# [env_steps, lr] points, absolute (linear between points, flat after the last one).
SCHEDULES = {
    "constant": (["algo.lr_schedule=constant"], [1, 1, 1, 1]),
    "linear": (["algo.lr_schedule=linear"], [1, 0.75, 0.5, 0.25]),
    "linear@0.5": (["algo.lr_schedule=linear", "algo.lr_decay_start=0.5"], [1, 1, 1, 0.5]),
    "points": (["algo.lr_schedule=[[0,2e-3],[512,1e-3],[640,1e-4]]"], [2e-3, 1.5e-3, 1e-3, 1e-4]),
}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_resume_equals_an_uninterrupted_run(tmp_path, schedule):
    """... and the learning rate follows algo.lr_schedule (4 rollouts of 256 env steps; linear@0.5:
    algo.lr_decay_start=0.5, constant for the first 512 steps, then down to 0 at 1,024; points:
    2e-3 -> 1e-3 over the first 512 steps, down to 1e-4 at 640 and flat from there)."""
    overrides, lrs = SCHEDULES[schedule]
    cfg = compose_cfg(TINY + ["model=gru", "train.env_steps=1024", "model.memory.backend=torch"] + overrides)
    full = PPOTrainer(cfg, tmp_path / "full")
    full.run(cfg.logger)
    first = PPOTrainer(cfg, tmp_path / "split")
    first.total_iterations = lambda: 2  # stops after 2 of 4 iterations, checkpoint written
    first.run(cfg.logger)
    second = PPOTrainer(cfg, tmp_path / "split")
    second.run(cfg.logger, resume=True)
    a, b = read_csv(tmp_path / "full" / "progress.csv"), read_csv(tmp_path / "split" / "progress.csv")
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in VOLATILE} == {k: v for k, v in rb.items() if k not in VOLATILE}
    for (name, p), q in zip(full.agent.state_dict().items(), second.agent.state_dict().values()):
        assert torch.equal(p, q), name
    assert np.array_equal(full.obs, second.obs)
    expected = lrs if schedule == "points" else [cfg.algo.lr * f for f in lrs]
    assert [float(r["train/lr"]) for r in b] == pytest.approx(expected, rel=1e-12)
    assert full.algo.opt.param_groups[0]["lr"] == pytest.approx(expected[-1], rel=1e-12)


@pytest.mark.parametrize("overrides, message", [
    (["algo.lr_schedule=cosine"], "algo.lr_schedule must be one of constant, linear or a list of "
                                  "\\[env_steps, lr\\] points, got 'cosine'"),
    (["algo.lr_schedule=linear", "algo.lr_decay_start=1.0"], r"lr_decay_start .* must be in \[0, 1\), got 1.0"),
    (["algo.lr_schedule=[[0,1e-3],[0,1e-4]]"], "env_steps increasing"),
    (["algo.lr_schedule=[[0,1e-3],[100,-1e-4]]"], "lr >= 0"),
    (["algo.lr_schedule=[[0,1e-3,5]]"], "pairs"),
    (["algo.lr_schedule=[]"], "pairs"),
    (["algo.lr_schedule=[[0,1e-3]]", "algo.lr_decay_start=0.5"], "lr_decay_start belongs to lr_schedule=linear"),
])
def test_lr_schedule_is_checked(overrides, message):
    from src.config import ConfigError
    with pytest.raises(ConfigError, match=message):
        PPOTrainer(compose_cfg(TINY + overrides), Path("unused"))


MODELS = sorted(p.stem for p in (__import__("src.config", fromlist=["CONF_DIR"]).CONF_DIR / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_one_ppo_iteration(tmp_path, model):
    cfg = compose_cfg(TINY + [f"model={model}", "train.num_envs=2", "train.rollout_len=16", "train.env_steps=32",
                              "algo.epochs=1", "algo.num_minibatches=1", "eval.num_episodes=0"]
                      + (["model.memory.trace_size=8"] if model == "ffm" else []))  # popgym's 128: slow here
    trainer = PPOTrainer(cfg, tmp_path)
    before = [p.detach().clone() for p in trainer.agent.memory.parameters()]
    trainer.run(cfg.logger)
    rows = read_csv(tmp_path / "progress.csv")
    assert len(rows) == 1 and math.isfinite(float(rows[0]["train/value_loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.agent.memory.parameters()))


def test_ppo_rejects_continuous_actions_and_bad_minibatches(tmp_path):
    from src.config import ConfigError
    with pytest.raises(ConfigError, match="algo=ppo needs .*use task=popgym"):
        PPOTrainer(compose_cfg(["algo=ppo", "logger=none"]), tmp_path)
    cfg = compose_cfg(TINY + ["env=popgym", "env.kwargs.name=PositionOnlyPendulumEasy"])
    with pytest.raises(ValueError, match="discrete actions only.*Box"):
        PPOTrainer(cfg, tmp_path)
    cfg = compose_cfg(TINY + ["algo.num_minibatches=3"])
    with pytest.raises(ConfigError, match="num_envs=4 does not split into algo.num_minibatches=3"):
        PPOTrainer(cfg, tmp_path)


def test_plot_reads_ppo_runs(tmp_path, capsys):
    from omegaconf import OmegaConf

    from src.plot import main as plot_main
    for model in ("gru", "shm"):
        cfg = compose_cfg(TINY + [f"model={model}", "eval.num_episodes=0"])
        run = tmp_path / "sweep" / model
        PPOTrainer(cfg, run).run(cfg.logger)
        (run / ".hydra").mkdir()
        OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    assert plot_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "default")]) == 0  # PPO's own measure
    assert (tmp_path / "default" / "summary.md").read_text().startswith("# Final eval/return_train")
    assert plot_main([str(tmp_path / "sweep"), "--metric", "eval/success_eval"]) == 1  # no such data: the error
    assert "eval/mmer, eval/return_train" in capsys.readouterr().err                  # names the columns
    assert plot_main([str(tmp_path / "sweep"), "--metric", "eval/mmer", "--out", str(tmp_path / "plots")]) == 0
    summary = (tmp_path / "plots" / "summary.md").read_text()
    assert "### repeat_previous_easy" in summary and "| shm |" in summary and "| gru |" in summary
    assert (tmp_path / "plots" / "repeat_previous_easy.png").stat().st_size > 0


def test_stop_signal_writes_a_checkpoint_and_the_resumed_run_matches(tmp_path, caplog):
    import os
    import signal

    from src.loop import TrainingInterrupted
    caplog.set_level("INFO", logger="src.ppo_loop")
    cfg = compose_cfg(TINY + ["model=gru", "train.env_steps=1024", "eval.interval=2", "model.memory.backend=torch"])
    full = PPOTrainer(cfg, tmp_path / "full")
    full.run(cfg.logger)
    stopped = PPOTrainer(cfg, tmp_path / "stopped")
    update = stopped.algo.update

    def update_then_signal(*args):
        out = update(*args)
        if stopped.iteration == 0:
            os.kill(os.getpid(), signal.SIGUSR2)  # as SLURM before a kill: finish the iteration, save, stop
        return out
    stopped.algo.update = update_then_signal
    requeue = []

    def submitit_like(sig, frame):  # stands in for submitit's SIGUSR2 handler (it requeues the job)
        requeue.append(sig)
    previous = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        with pytest.raises(TrainingInterrupted) as e:
            stopped.run(cfg.logger)
        assert e.value.exit_code == 128 + signal.SIGUSR2 and stopped.iteration == 1
        assert requeue == [signal.SIGUSR2]  # forwarded once, after the checkpoint
        # said before the hand-off (a default action would end the process before any later line)
        assert "received SIGUSR2: iteration 1 finished and checkpointed" in caplog.text
        assert f"resume={tmp_path / 'stopped'}" in caplog.text
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # the trainer's handler is gone again
    finally:
        signal.signal(signal.SIGUSR2, previous)
    resumed = PPOTrainer(cfg, tmp_path / "stopped")
    resumed.run(cfg.logger, resume=True)
    assert [int(r["iteration"]) for r in read_csv(tmp_path / "stopped" / "progress.csv")] == [1, 2, 4]
    for (name, p), q in zip(full.agent.state_dict().items(), resumed.agent.state_dict().values()):
        assert torch.equal(p, q), name


def test_non_finite_loss_stops_with_sacs_message(tmp_path, monkeypatch):
    from src.updates import NonFiniteError
    cfg = compose_cfg(TINY + ["model=gru", "model.memory.backend=torch", "eval.num_episodes=0"])
    trainer = PPOTrainer(cfg, tmp_path)
    update = trainer.algo.update

    def poisoned(batch, init_state):
        out = update(batch, init_state)
        out["value_loss"] = float("nan")
        return out

    monkeypatch.setattr(trainer.algo, "update", poisoned)
    with pytest.raises(NonFiniteError) as err:
        trainer.run(cfg.logger)
    msg = str(err.value)
    assert "iteration 1" in msg and "train/value_loss" in msg and "env=repeat_previous_easy" in msg
    assert "algo.grad_clip" in msg and "α" not in msg


def test_resume_may_change_the_learning_rate_ahead_of_the_run(tmp_path):
    """A run at a constant rate, resumed after 2 of 4 iterations with a schedule that keeps that rate
    up to there and then drops, equals a run with that schedule from the start; a schedule that
    changes a rate already used is refused (and the run is untouched)."""
    from src.config import ConfigError
    base = TINY + ["model=gru", "train.env_steps=1024", "model.memory.backend=torch"]
    lr = compose_cfg(base).algo.lr
    drop = compose_cfg(base + [f"algo.lr_schedule=[[0,{lr}],[512,{lr}],[768,{lr / 10}]]"])
    full = PPOTrainer(drop, tmp_path / "full")
    full.run(drop.logger)
    first = PPOTrainer(compose_cfg(base), tmp_path / "split")
    first.total_iterations = lambda: 2
    first.run(drop.logger)
    for past, step in (([f"algo.lr_schedule=[[0,{lr}],[256,{lr / 10}]]"], 256), ([f"algo.lr={lr * 2}"], 0),
                       (["algo.lr_schedule=linear"], 256)):
        with pytest.raises(ConfigError, match=f"changes the past: at env step {step} the run used lr {lr:g}"):
            PPOTrainer(compose_cfg(base + past), tmp_path / "split").load()
    second = PPOTrainer(drop, tmp_path / "split")
    second.run(drop.logger, resume=True)
    a, b = read_csv(tmp_path / "full" / "progress.csv"), read_csv(tmp_path / "split" / "progress.csv")
    assert [float(r["train/lr"]) for r in b] == pytest.approx([lr, lr, lr, lr / 10], rel=1e-12)
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in VOLATILE} == {k: v for k, v in rb.items() if k not in VOLATILE}
    for (name, p), q in zip(full.agent.state_dict().items(), second.agent.state_dict().values()):
        assert torch.equal(p, q), name


def test_extending_a_linear_schedule_is_refused_once_its_decay_began(tmp_path):
    """train.env_steps moves a linear decay: allowed while the run is still before the decay, refused
    once the run has used decayed rates (its history would no longer match its config)."""
    from src.config import ConfigError
    base = TINY + ["model=gru", "model.memory.backend=torch", "eval.num_episodes=0", "algo.lr_schedule=linear",
                   "algo.lr_decay_start=0.5"]
    run = PPOTrainer(compose_cfg(base + ["train.env_steps=1024"]), tmp_path)
    run.total_iterations = lambda: 2  # 512 steps: the decay starts at 512, no decayed rate used yet
    run.run(compose_cfg(base).logger)
    PPOTrainer(compose_cfg(base + ["train.env_steps=2048"]), tmp_path).load()  # rates 1, 1 either way
    run = PPOTrainer(compose_cfg(base + ["train.env_steps=1024"]), tmp_path)
    run.run(compose_cfg(base).logger, resume=True)  # the rest: lr x 1 at step 512, x 0.5 at 768
    with pytest.raises(ConfigError, match="changes the past: at env step 768"):
        PPOTrainer(compose_cfg(base + ["train.env_steps=2048"]), tmp_path).load()


def test_checkpoint_from_before_the_time_embedding_resumes(tmp_path):
    """A PPO checkpoint whose config has no ppo_agent.time_embedding, layout or algo.lr_schedule (runs
    before they existed) is the same experiment as today's config with time_embedding null, layout
    memrl, lr_schedule constant."""
    cfg = compose_cfg(TINY + ["model=gru", "model.memory.backend=torch", "eval.num_episodes=0",
                              "train.env_steps=256"])
    PPOTrainer(cfg, tmp_path).run(cfg.logger)
    path = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=False)
    del state["config"]["ppo_agent"]["time_embedding"]
    del state["config"]["ppo_agent"]["layout"]  # and before ppo_agent.layout (memrl's)
    del state["config"]["algo"]["lr_schedule"]  # and before algo.lr_schedule (constant)
    del state["config"]["algo"]["lr_decay_start"]
    torch.save(state, path)
    PPOTrainer(cfg, tmp_path).load()  # no config-difference error


def test_recall_probe_builds_the_named_variants_and_runs():
    from benchmarks.recall_probe import build, probe
    plain, coded = build("shm:none@8"), build("shm:sine@8")
    assert plain.time_embedding is None and coded.time_embedding is not None
    assert plain.memory.mem_size == 8 and build("gru").time_embedding is None
    r = probe("gru", steps=3, lr=1e-3, lag=4)
    assert r["model"] == "gru" and 0.0 <= r["first"] <= 1.0 and 0.0 <= r["last"] <= 1.0


def test_recall_probe_default_lag_is_the_one_repeat_previous_easy_rewards():
    """Answering, at every step, the probe's label (the suit seen ``lag`` steps before the current
    card) earns RepeatPrevious-Easy's full return from the env itself; one step further does not."""
    from popgym.envs.repeat_previous import RepeatPrevious

    from benchmarks.recall_probe import REPEAT_PREVIOUS_EASY_LAG

    def episode_return(lag: int) -> float:
        env = RepeatPrevious(num_decks=1, k=4)
        seen, total, done = [int(env.reset(seed=3)[0])], 0.0, False
        while not done:
            answer = seen[-1 - lag] if len(seen) > lag else 0  # early steps are not scored
            obs, reward, done, _, _ = env.step(answer)
            seen.append(int(obs))
            total += reward
        return total

    assert episode_return(REPEAT_PREVIOUS_EASY_LAG) == pytest.approx(1.0)
    assert episode_return(REPEAT_PREVIOUS_EASY_LAG + 1) < 0.5


def test_a_finished_ppo_run_is_extended_by_resume_with_more_env_steps(tmp_path):
    """resume=<dir> train.env_steps=N: the command line composes with the run's own task=popgym
    (train.env_steps exists only there), the run continues to N and its config records N; with it,
    a new lr schedule that keeps the rates already used (a refused one leaves the run untouched)."""
    run = tmp_path / "run"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "src.train", *args], cwd=Path(__file__).resolve().parents[1],
                              capture_output=True, text=True, timeout=300)
    r = cli(*TINY, "model=gru", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    saved = (run / ".hydra" / "config.yaml").read_text()
    r = cli(f"resume={run}", "algo.lr_schedule=[[0,5e-5],[256,1e-5]]", "train.env_steps=1024")
    assert r.returncode == 2 and "changes the past: at env step 256" in r.stderr, r.stderr[-2000:]
    assert (run / ".hydra" / "config.yaml").read_text() == saved  # a refused resume writes nothing
    r = cli(f"resume={run}", "algo.lr_schedule=[[0,5e-5],[512,5e-5],[768,1e-5]]", "train.env_steps=1024")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_csv(run / "progress.csv")
    assert [int(row["env_steps"]) for row in rows] == [256, 512, 768, 1024]
    assert [float(row["train/lr"]) for row in rows] == pytest.approx([5e-5, 5e-5, 5e-5, 1e-5])
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert saved.train.env_steps == 1024 and saved.algo.lr_schedule[-1] == [768, 1e-5]

