"""The fast acting path (src/acting.py's ActingPolicy, src/rollouts.py's batched bookkeeping) against
references: the rollout loop as it was (benchmarks.acting_speed.legacy_rollouts, bit-exact with the
reference step), the plain ``agent.act`` step, and the actor's own sequence forward over the
collected episodes (the training path), which also checks how the acting state is carried and reset."""
import numpy as np
import pytest
import torch

from benchmarks.acting_speed import legacy_rollouts, rollout_kwargs
from src.acting import ActingPolicy, ReferencePolicy
from src.agent import RecurrentActorCritic
from src.algos.sac import shift_inputs
from src.loop import Trainer
from src.rollouts import run_rollouts
from tests.helpers import compose_cfg
from torchkit.memory.rnn import GRU

torch.set_num_threads(1)
TOL = dict(rtol=1e-5, atol=1e-5)  # fast vs reference step: GEMMs of other shapes, last bits may differ
N_ENVS = 3

ARRANGEMENTS = {  # the actors that acting speed is measured for, and the fallback paths
    "wind-paper-gru": ["env=wind", "experiment=paper", "model=gru"],
    "point_robot-paper-shm": ["env=point_robot", "experiment=paper", "model=shm"],  # GRU 128 actor, k = 2
    "wind-shm": ["env=wind", "model=shm"],  # SHM actor (θ row 0)
    "wind-shm-random-theta": ["env=wind", "model=shm", "model.width=32",  # the actor draws θ rows when acting
                              "model.actor_overrides.theta_sampling=random"],
    "wind-shm-eager": ["env=wind", "model=shm", "model.width=32", "model.memory.backend=eager"],  # not C++
    "wind-lstm": ["env=wind", "model=lstm", "model.width=32"],  # memory without an acting_step of its own
    "point_robot-fwp": ["env=point_robot", "model=fwp", "model.width=32"],  # readout folded, generic step
}


def make_trainer(tmp_path, overrides) -> Trainer:
    cfg = compose_cfg(["logger=none", "progress_bar=false", "env.num_train_tasks=4", "env.num_eval_tasks=2",
                       f"train.rollouts_per_iter={N_ENVS}", "train.buffer_size=10000", *overrides])
    torch.manual_seed(0)
    trainer = Trainer(cfg, tmp_path)
    with torch.no_grad():  # an untrained actor's means are ~1e-3 (last layer U(±1e-3)): make them O(1),
        trainer.agent.actor.head.mlp.last.weight.mul_(1000.0)  # so that actions depend visibly on the memory
    return trainer


def rollouts(trainer: Trainer, impl: str, mode: str, tasks, seed: int = 3):
    """One group of rollouts on freshly seeded envs, with torch and the action RNG seeded."""
    envs = [trainer.make_env(seed=1000 + i) for i in range(len(tasks))]
    kw = {**rollout_kwargs(trainer), "rng": np.random.default_rng(seed)}
    torch.manual_seed(seed)
    if impl == "legacy":
        return legacy_rollouts(trainer.agent, envs, tasks, mode, **kw)
    return run_rollouts(trainer.agent, envs, tasks, mode, fast=impl == "fast", **kw)


def assert_same_rollouts(got, want, exact: bool):
    (eps_got, succ_got, ret_got), (eps_want, succ_want, ret_want) = got, want
    assert len(eps_got) == len(eps_want)
    for a, b in zip(eps_got, eps_want):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
            if exact or key in ("rew", "term"):
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            else:
                np.testing.assert_allclose(a[key], b[key], **TOL, err_msg=key)
    np.testing.assert_array_equal(succ_got, succ_want)
    np.testing.assert_allclose(ret_got, ret_want, rtol=0, atol=0 if exact else 1e-9)


@pytest.mark.parametrize("name", ARRANGEMENTS)
def test_rollouts_equal_the_previous_loop(tmp_path, name):
    """Same seeds -> the same episodes as the loop before the fast path: bit-exact with the reference
    step (fast=False), to float tolerance with the fast step (same actions, same trajectories)."""
    trainer = make_trainer(tmp_path, ARRANGEMENTS[name])
    tasks = trainer.train_tasks[[0, 1, 3]]
    modes = ("stochastic", "deterministic", "random") if name == "wind-paper-gru" else ("stochastic",)
    for mode in modes:
        legacy = rollouts(trainer, "legacy", mode, tasks)
        assert_same_rollouts(rollouts(trainer, "reference", mode, tasks), legacy, exact=True)
        assert_same_rollouts(rollouts(trainer, "fast", mode, tasks), legacy, exact=mode == "random")


def sequence_params(agent: RecurrentActorCritic, episodes, reset_at=None):
    """The actor's sequence forward (the training path) over whole episodes of equal length:
    mean, std [n, T, A]; ``reset_at``: restart the memory at that step (a deliberately wrong state)."""
    dev = next(agent.parameters()).device
    obs = torch.as_tensor(np.stack([ep["obs"][:-1] for ep in episodes]), device=dev).float()
    act = torch.as_tensor(np.stack([ep["act"] for ep in episodes]), device=dev)
    rew = torch.as_tensor(np.stack([ep["rew"] for ep in episodes]), device=dev)
    prev_a, prev_r = shift_inputs(act, rew)
    reset = None
    if reset_at is not None:
        reset = torch.zeros(obs.shape[:2], dtype=torch.bool, device=dev)
        reset[:, reset_at] = True
    with torch.no_grad():
        (mean, log_std), _ = agent.actor(prev_a[:, :-1], prev_r[:, :-1], obs, reset=reset)
    return mean, log_std.exp(), act


@pytest.mark.parametrize("name", ["wind-paper-gru", "point_robot-paper-shm", "wind-shm"])
def test_rollout_actions_are_the_actors_sequence_forward(tmp_path, name):
    """Every action of two successive fast rollouts is tanh(μ_t + σ_t ε_t) with μ, σ from the actor's
    forward over the whole collected sequence from a fresh state and ε_t the step's normal draws
    (replayed from the seed): the acting state starts fresh per rollout (task) and is carried across
    the steps (and across PointRobot's two episodes of a task). A state restarted mid-sequence gives
    other actions, so the comparison sees the memory."""
    trainer = make_trainer(tmp_path, ARRANGEMENTS[name])
    for seed, tasks in ((5, trainer.train_tasks[[0, 1, 2]]), (6, trainer.train_tasks[[3, 1, 0]])):
        episodes, _, _ = rollouts(trainer, "fast", "stochastic", tasks, seed=seed)
        mean, std, act = sequence_params(trainer.agent, episodes)
        n, T, A = act.shape
        torch.manual_seed(seed)
        noise = torch.stack([torch.randn(n, A, device=act.device) for _ in range(T)], 1)  # one draw per step
        torch.testing.assert_close(act, torch.tanh(mean + std * noise), **TOL)
        wrong_mean, _, _ = sequence_params(trainer.agent, episodes, reset_at=T // 2)
        assert (wrong_mean - mean)[:, T // 2:].abs().max() > 1e-3
        det, _, _ = rollouts(trainer, "fast", "deterministic", tasks, seed=seed)
        mean, _, act = sequence_params(trainer.agent, det)
        torch.testing.assert_close(act, torch.tanh(mean), **TOL)


@pytest.mark.parametrize("obs_shape,discrete", [((3,), False), ((3,), True), ((5, 5, 3), True)])
def test_fast_step_equals_the_reference_step(obs_shape, discrete):
    """ActingPolicy.act == agent.act step after step (state carried), for flat and image observations
    and both action kinds (images: the CNN modules; discrete: the same categorical draw)."""
    torch.manual_seed(0)
    embed = {"action": 4, "reward": 0, "obs": 6, "current_obs": 6 if discrete else 5}
    agent = RecurrentActorCritic(obs_shape, 3, embed, lambda d: GRU(d, 8), policy_layers=[16, 16],
                                 q_layers=[16], discrete=discrete)
    g = torch.Generator().manual_seed(1)
    policies = (ActingPolicy(agent), ReferencePolicy(agent))
    states = [p.initial_state(4) for p in policies]
    for t in range(4):
        obs = torch.rand(4, *obs_shape, generator=g) * (255 if len(obs_shape) == 3 else 1)
        prev_a, prev_r = torch.rand(4, 3, generator=g), torch.rand(4, 1, generator=g)
        for deterministic in (False, True):
            outs = []
            for i, p in enumerate(policies):
                torch.manual_seed(10 + t)
                a, s = p.act(prev_a, prev_r, obs, states[i], deterministic=deterministic)
                outs.append((a, s))
            torch.testing.assert_close(outs[0][0], outs[1][0], **TOL)
        states = [s for _, s in outs]
        torch.testing.assert_close(states[0], states[1], **TOL)
