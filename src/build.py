"""Everything a run is made of, built from its config: device, envs, agent and algorithm.

Each function reads the config keys it names and nothing else; the defaults are in conf/.
Continuous (Box) action spaces use SAC (``algo=sac``) or TD3 (``algo=td3``), discrete ones SAC-Discrete (``algo=sacd``);
discrete actions are one-hot vectors for the agent and the replay."""
from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import envs
from src.agent import RecurrentActorCritic
from src.algos.sac import SAC
from src.algos.sacd import SACDiscrete
from src.algos.td3 import TD3

ALGOS = ("sac", "sacd", "td3")  # sac, td3: Box actions; sacd: Discrete ones


def resolve_device(name: str) -> torch.device:
    """``device``: auto (CUDA when present) | cpu | cuda | cuda:N."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name} requested but CUDA is not available: use device=auto or device=cpu")
    return torch.device(name)


def make_env(env_cfg: DictConfig, seed=None):
    """``env.id`` with ``env.kwargs``, in tasks of ``env.episodes_per_task`` episodes; seeded (env and
    action space) when ``seed`` is given."""
    env = envs.make(env_cfg.id, env_cfg.episodes_per_task, **OmegaConf.to_container(env_cfg.kwargs, resolve=True))
    if seed is not None:
        env.reset(seed=int(seed))
        env.action_space.seed(int(seed))
    return env


def check_algo_and_action_space(algo: str, env_name: str, act_space) -> bool:
    """The algorithm must fit the env's action space; returns True for discrete actions."""
    if algo not in ALGOS:
        raise ValueError(f"algo={algo}: unknown algorithm; valid: {', '.join(ALGOS)}")
    discrete = isinstance(act_space, spaces.Discrete)
    if not discrete and not isinstance(act_space, spaces.Box):
        raise ValueError(f"env {env_name} has action space {act_space}: only Box (algo=sac) and "
                         f"Discrete (algo=sacd) are supported")
    if algo in ("sac", "td3") and discrete:
        raise ValueError(f"algo={algo} needs a continuous (Box) action space but env {env_name} has "
                         f"{act_space}: use algo=sacd (off-policy, as task=credit runs) or algo=ppo (as task=popgym runs)")
    if algo == "sacd" and not discrete:
        raise ValueError(f"algo=sacd needs a discrete action space but env {env_name} has "
                         f"{act_space}: use algo=sac or algo=td3")
    return discrete


def action_dim(act_space, discrete: bool) -> int:
    """|A| (discrete: one-hot width) or the flat size of a Box."""
    return int(act_space.n) if discrete else int(np.prod(act_space.shape))


def episode_horizon(env) -> int:
    """Max steps of one episode: the env's ``max_episode_steps`` (meta-RL) or ``horizon`` (credit)."""
    for name in ("max_episode_steps", "horizon"):
        value = getattr(env.unwrapped, name, None)
        if value is not None:
            return int(value)
    if env.spec is not None and env.spec.max_episode_steps:
        return int(env.spec.max_episode_steps)
    raise ValueError(f"cannot tell the episode length of {env.unwrapped}: it has no max_episode_steps "
                     f"or horizon attribute")


def actor_memory_node(cfg: DictConfig) -> DictConfig:
    """The actor's memory config: ``agent.actor_memory`` (a model config, chosen with
    ``model@agent.actor_memory=<model>``) or else ``model``, with that config's non-null
    ``actor_overrides`` applied (e.g. SHM's ``theta_sampling``)."""
    model = cfg.model if cfg.agent.actor_memory is None else cfg.agent.actor_memory
    overrides = OmegaConf.to_container(model.actor_overrides, resolve=True)
    return OmegaConf.merge(OmegaConf.to_container(model.memory, resolve=True),
                           {k: v for k, v in overrides.items() if v is not None})


def actor_memory_factory(cfg: DictConfig):
    """input_size -> the actor's memory layer (see ``actor_memory_node``)."""
    node = actor_memory_node(cfg)
    return lambda d: instantiate(node, input_size=d)


def build_agent(cfg: DictConfig, obs_shape, act_dim: int, discrete: bool, device) -> RecurrentActorCritic:
    """The actor-critic of ``agent.*``: the critic's memory is ``model.memory``, the actor's
    ``actor_memory_node``; embedding sizes ``agent.embed`` (from the env config)."""
    a = cfg.agent
    return RecurrentActorCritic(
        obs_shape, act_dim, dict(a.embed), lambda d: instantiate(cfg.model.memory, input_size=d),
        actor_memory_factory(cfg), policy_layers=list(a.policy_layers), q_layers=list(a.q_layers),
        memory_init=a.init, discrete=discrete, fold_readout=a.fold_readout).to(device)


def build_algo(cfg: DictConfig, agent: RecurrentActorCritic, discrete: bool):
    """SAC-Discrete for discrete actions, TD3 for ``algo=td3``, SAC otherwise, with the
    hyperparameters of ``algo.*``."""
    a = cfg.algo
    if a.name == "td3":
        return TD3(agent, gamma=a.gamma, tau=a.tau, lr=a.lr, exploration_noise=a.exploration_noise,
                   target_noise=a.target_noise, target_noise_clip=a.target_noise_clip,
                   policy_delay=a.policy_delay, grad_clip=a.grad_clip, precision=cfg.precision)
    common = dict(gamma=a.gamma, tau=a.tau, lr=a.lr, alpha_lr=a.alpha_lr, auto_alpha=a.auto_alpha,
                  init_alpha=a.init_alpha, grad_clip=a.grad_clip, precision=cfg.precision)
    if discrete:
        return SACDiscrete(agent, target_entropy_ratio=a.target_entropy_ratio, **common)
    return SAC(agent, target_entropy=a.target_entropy, **common)
