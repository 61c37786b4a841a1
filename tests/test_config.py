"""Every env x model config composes; defaults reproduce the reference schedules."""
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.config import CONF_DIR as CONF
from src.config import ConfigError, validate
from src.ppo_loop import validate_ppo
from tests.helpers import compose_cfg, options


def is_popgym(env: str) -> bool:
    text = (CONF / "env" / f"{env}.yaml").read_text()
    return "memrl/PopGym-v0" in text or "- popgym" in text


# POPGym presets differ only in the env name: one of them with every model, all of them below.
ENVS_X_MODELS = [e for e in options("env") if not is_popgym(e) or e in ("popgym", "repeat_previous_easy")]


@pytest.mark.parametrize("env", ENVS_X_MODELS)
@pytest.mark.parametrize("model", options("model"))
def test_every_env_and_model_composes(env, model):
    popgym = is_popgym(env)
    cfg = compose_cfg([f"env={env}", f"model={model}"] + (["task=popgym"] if popgym else []))
    OmegaConf.resolve(cfg)
    if popgym:  # recurrent PPO: the memory reads the pre-MLP's output
        validate_ppo(cfg)
        input_size = cfg.ppo_agent.pre_layers[-1]
    else:
        validate(cfg)
        input_size = sum(cfg.agent.embed[k] for k in ("action", "reward", "obs"))
    layer = instantiate(cfg.model.memory, input_size=input_size)
    assert layer.output_size == cfg.model.width


@pytest.mark.parametrize("env", [e for e in options("env") if is_popgym(e)])
def test_every_popgym_preset_composes_and_builds_its_env(env):
    import envs
    cfg = compose_cfg([f"env={env}", "task=popgym"])
    OmegaConf.resolve(cfg)
    validate_ppo(cfg)
    assert cfg.algo.name == "ppo"
    if env != "popgym":  # repeat_previous_easy -> RepeatPreviousEasy
        assert cfg.env.kwargs.name == "".join(w.capitalize() for w in env.split("_"))
    made = envs.make(cfg.env.id, 1, **cfg.env.kwargs)
    assert made.unwrapped.name == cfg.env.kwargs.name


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    OmegaConf.resolve(cfg)
    (validate_ppo if cfg.algo.name == "ppo" else validate)(cfg)


def test_wind_defaults_are_the_reference_schedule():
    cfg = compose_cfg([])
    assert (cfg.task.name, cfg.env.name, cfg.model.name, cfg.algo.name) == ("meta", "wind", "gru", "sac")
    tr = cfg.train
    assert (tr.num_warmup_rollouts, tr.num_iters, tr.rollouts_per_iter, tr.updates_per_iter, tr.batch_size) == \
        (100, 500, 10, 500, 64)
    assert (cfg.algo.gamma, cfg.algo.tau, cfg.algo.lr, cfg.algo.target_entropy) == (0.9, 0.005, 3e-4, None)
    assert dict(cfg.agent.embed) == {"action": 8, "reward": 0, "obs": 32, "current_obs": 32}
    assert (cfg.env.num_tasks, cfg.env.num_train_tasks, cfg.env.num_eval_tasks) == (200, 50, 150)
    assert cfg.env.kwargs.goal_radius == 0.01 and cfg.env.kwargs.max_episode_steps == 100


def test_point_robot_defaults_are_the_reference_schedule():
    cfg = compose_cfg(["env=point_robot_10_190"])
    tr = cfg.train
    assert (tr.num_warmup_rollouts, tr.num_iters, tr.rollouts_per_iter, tr.updates_per_iter, tr.batch_size) == \
        (400, 200, 25, 1000, 32)
    assert (cfg.env.num_train_tasks, cfg.env.num_eval_tasks, cfg.env.episodes_per_task) == (10, 190, 2)
    assert dict(cfg.agent.embed) == {"action": 0, "reward": 8, "obs": 32, "current_obs": 32}


def test_reference_sizes_follow_the_env():
    assert compose_cfg(["experiment=reference_sizes"]).model.width == 64
    assert compose_cfg(["experiment=reference_sizes", "env=point_robot"]).model.width == 128


@pytest.mark.parametrize("override,match", [
    (["train.batch_size=0"], "train.batch_size must be positive"),
    (["env.num_train_tasks=150"], "larger than env.num_tasks"),
    (["model.width=-3"], "model.width must be positive"),
    (["eval.interval=0"], "eval.interval"),
    # integer keys: a float or a string is an error naming the key, never truncated
    (["seed=abc"], r"seed must be an integer, got 'abc' \(str\)"),
    (["train.num_iters=1.5"], r"train.num_iters must be an integer, got 1.5"),
    (["train.batch_size=2.5"], "train.batch_size must be an integer"),
    (["eval.interval=1.5"], "eval.interval must be an integer"),
    (["task=credit", "eval.num_episodes=2.0"], "eval.num_episodes must be an integer"),
    (["num_threads=true"], "num_threads must be an integer"),
    (["agent.init=orthogonal"], "agent.init=orthogonal: valid: reference"),
    (["task=popgym", "algo=sac"], r"algo=sac with task=popgym: that task's schedule is PPO's .*use algo=ppo"),
])
def test_bad_values_are_named(override, match):
    with pytest.raises(ConfigError, match=match):
        validate(compose_cfg(override))


PAPER_META = ["wind", "wind_10_190", "point_robot", "point_robot_10_190"]
PAPER_CREDIT = ["visual_match", "visual_match_500", "key_to_door", "key_to_door_500"]
PAPER_MODELS = ["shm", "gru", "fwp", "gpt2", "s6", "mlstm", "ffm"]


@pytest.mark.parametrize("env", PAPER_META + PAPER_CREDIT)
@pytest.mark.parametrize("model", PAPER_MODELS)
def test_paper_preset_is_the_released_arrangement(env, model):
    """experiment=paper: GRU actor, the model under test in the critic, the released widths."""
    from src.agent import RecurrentActorCritic
    from src.build import actor_memory_factory
    task = "meta" if env in PAPER_META else "credit"
    cfg = compose_cfg([f"task={task}", f"env={env}", f"model={model}", "experiment=paper"])
    OmegaConf.resolve(cfg)
    validate(cfg)
    width = 64 if env.startswith("wind") else 128
    assert cfg.model.width == width and cfg.agent.actor_memory.name == "gru" and cfg.agent.init == "reference"
    if task == "meta":
        assert (cfg.algo.name, cfg.algo.init_alpha, cfg.algo.auto_alpha) == ("sac", 1.0, True)
        assert cfg.train.warmup_action_range == 0.1 and cfg.train.warmup_updates == 0
    else:
        assert cfg.algo.name == "sacd" and cfg.train.warmup_updates == int(0.25 * cfg.env.horizon * 5)
    d = sum(cfg.agent.embed[k] for k in ("action", "reward", "obs"))
    critic = instantiate(cfg.model.memory, input_size=d)
    actor = actor_memory_factory(cfg)(d)
    assert type(actor).__name__ == "GRU" and actor.output_size == width
    assert critic.output_size == width and type(critic).__module__ == cfg.model.memory._target_.rsplit(".", 1)[0]
    if task == "meta":  # the agent wires them that way round
        agent = RecurrentActorCritic((3,), 2, dict(cfg.agent.embed), lambda i: instantiate(cfg.model.memory, input_size=i),
                                     actor_memory_factory(cfg))
        assert type(agent.actor.encoder.memory).__name__ == "GRU"
        assert type(agent.critic.encoder.memory) is type(critic)


def test_paper_wind_schedule_is_the_released_one():
    cfg = compose_cfg(["experiment=paper", "model=shm"])
    tr = cfg.train
    assert (cfg.env.name, cfg.model.name, cfg.model.width) == ("wind", "shm", 64)
    total = 100 * (tr.num_warmup_rollouts + tr.num_iters * tr.rollouts_per_iter)
    assert (total, tr.num_iters * tr.updates_per_iter, tr.batch_size) == (510_000, 250_000, 64)
    assert cfg.eval.interval == 4


def test_actor_memory_is_a_choice_of_the_model_group():
    """model@agent.actor_memory=<model> puts that model's config under agent.actor_memory; its memory
    takes the critic's width; the old value spelling is an error that gives the new one."""
    from src.build import actor_memory_node
    assert compose_cfg([]).agent.actor_memory is None
    cfg = compose_cfg(["model=shm", "model@agent.actor_memory=lstm", "model.width=48"])
    assert cfg.agent.actor_memory.name == "lstm" and cfg.model.name == "shm"
    node = actor_memory_node(cfg)
    assert node._target_ == "torchkit.memory.rnn.LSTM" and node.hidden_size == 48
    paper = compose_cfg(["experiment=paper", "~model@agent.actor_memory"])  # back to the model's own
    assert paper.agent.actor_memory is None and actor_memory_node(paper).hidden_size == 64
    with pytest.raises(ConfigError, match="spelled model@agent.actor_memory=gru"):
        validate(compose_cfg(["agent.actor_memory=gru"]))


def test_train_and_eval_keys_are_declared_in_train_yaml():
    """conf/train.yaml lists every train/eval key the loop reads (env configs fill the ??? ones)."""
    from tests.helpers import CONF
    base = OmegaConf.load(CONF / "train.yaml")
    assert set(base.train) >= {"num_warmup_rollouts", "num_iters", "rollouts_per_iter", "updates_per_iter",
                               "batch_size", "buffer_size", "warmup_action_range", "warmup_updates"}
    assert set(base.eval) == {"interval", "num_episodes", "best_by"}
    for env in options("env"):
        cfg = compose_cfg([f"env={env}"])
        if cfg.env.id.lower().startswith("memrl/popgym"):
            continue  # PPO's schedule (task=popgym) has keys of its own: tests/test_popgym_envs.py
        assert not [k for k in cfg.train if OmegaConf.is_missing(cfg.train, k)], env


def test_resume_with_another_actor_memory_is_a_conflict(tmp_path):
    from src.config import load_resume_config
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(compose_cfg(["model=shm"]), tmp_path / ".hydra" / "config.yaml")
    ov = ["model@agent.actor_memory=gru"]
    with pytest.raises(ConfigError, match="agent.actor_memory.name: run has None, command line asks 'gru'"):
        load_resume_config(tmp_path, compose_cfg(["model=shm"] + ov), ov)


@pytest.mark.parametrize("start,override", [
    (["env=wind"], "train.num_iters=800"),
    (["task=credit", "env=visual_match"], "train.env_steps=3000000"),  # num_iters is derived from it
    (["task=popgym"], "train.env_steps=20000000"),
])
def test_resume_may_change_the_budget_and_the_run_records_it(tmp_path, start, override):
    from src.config import load_resume_config
    from src.rundir import record_budget
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(compose_cfg(start), tmp_path / ".hydra" / "config.yaml")
    key, value = override.split("=")
    old = OmegaConf.select(compose_cfg(start), key)
    longer = compose_cfg(start + [override])
    cfg = load_resume_config(tmp_path, longer, [override])
    assert OmegaConf.select(cfg, key) == int(value)
    assert cfg.train.get("num_iters") == longer.train.get("num_iters")  # a derived num_iters follows
    assert record_budget(tmp_path, cfg) == [f"{key} {old} -> {value}"]
    saved = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert OmegaConf.select(saved, key) == int(value)
    if "task=credit" in start:  # still the interpolation, now resolving to the longer run's
        assert OmegaConf.is_interpolation(saved.train, "num_iters") and saved.train.num_iters == longer.train.num_iters
    assert record_budget(tmp_path, cfg) == []  # written once
    with pytest.raises(ConfigError, match=r"seed: run has 0, command line asks 5"):  # other keys: conflicts
        load_resume_config(tmp_path, compose_cfg(start + ["seed=5"]), ["seed=5"])


def test_resume_may_change_ppos_learning_rate_schedule_only(tmp_path):
    """PPO: algo.lr / lr_schedule / lr_decay_start are taken on resume and written to the run's config
    (PPOTrainer then checks the rates already used); for SAC algo.lr stays a conflict."""
    from src.config import load_resume_config
    from src.rundir import record_budget
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(compose_cfg(["task=popgym"]), tmp_path / ".hydra" / "config.yaml")
    ov = ["algo.lr_schedule=[[0,5e-5],[1000000,1e-5]]", "train.env_steps=20000000"]
    cfg = load_resume_config(tmp_path, compose_cfg(["task=popgym"] + ov), ov)
    assert OmegaConf.to_container(cfg.algo.lr_schedule) == [[0, 5e-5], [1000000, 1e-5]]
    assert record_budget(tmp_path, cfg) == ["algo.lr_schedule constant -> [[0, 5e-05], [1000000, 1e-05]]",
                                            "train.env_steps 15000000 -> 20000000"]
    saved = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert OmegaConf.to_container(saved.algo.lr_schedule) == [[0, 5e-5], [1000000, 1e-5]]
    sac = tmp_path / "sac"
    (sac / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_cfg(["env=wind"]), sac / ".hydra" / "config.yaml")
    with pytest.raises(ConfigError, match=r"algo.lr: run has .*, command line asks 0.001"):
        load_resume_config(sac, compose_cfg(["env=wind", "algo.lr=1e-3"]), ["algo.lr=1e-3"])


def test_resume_of_a_sweep_dir_points_to_continue(tmp_path):
    from src.config import load_resume_config
    with pytest.raises(ConfigError, match=r"not a memrl run directory$"):
        load_resume_config(tmp_path, compose_cfg([]), [])
    (tmp_path / "launch_command.txt").write_text("cd code && python -m src.train -m model=gru,shm\n")
    with pytest.raises(ConfigError, match=f"it is a sweep dir: continue its runs with python -m launchers.sweep --continue {tmp_path}"):
        load_resume_config(tmp_path, compose_cfg([]), [])


@pytest.mark.parametrize("model", options("model"))
def test_every_memory_setting_is_in_its_model_config(model):
    """conf/model/<model>.yaml names every constructor argument of its layer (but input_size, which
    the agent passes): no layer setting lives only as a code default."""
    import inspect
    from hydra.utils import get_class
    node = compose_cfg([f"model={model}"]).model.memory
    params = inspect.signature(get_class(node._target_).__init__).parameters
    assert set(params) - {"self", "input_size"} == set(node) - {"_target_"}


@pytest.mark.parametrize("actor", [None, "gru"])
def test_configs_saved_before_the_renames_upgrade_to_todays(actor):
    """A run saved with agent.orthogonal_init, agent.actor_memory=<name>, no eval.num_episodes and no
    model.actor_overrides resumes as the same experiment in today's keys."""
    from src.config import upgrade_saved_config
    today = compose_cfg(["model=lstm", "model.width=48"] + ([f"model@agent.actor_memory={actor}"] if actor else []))
    old = OmegaConf.to_container(today, resolve=True)
    old["agent"]["orthogonal_init"] = old["agent"].pop("init") == "reference"
    old["agent"]["actor_memory"] = actor
    del old["eval"]["num_episodes"], old["model"]["actor_overrides"]
    upgraded = upgrade_saved_config(OmegaConf.create(old))
    assert OmegaConf.to_container(upgraded, resolve=True) == OmegaConf.to_container(today, resolve=True)
    validate(upgraded)


@pytest.mark.parametrize("overrides", [["task=pomdp", "env=halfcheetah_v"], ["task=meta", "env=cheetah_vel"],
                                       ["task=meta", "env=wind"], ["task=credit", "env=tmaze_passive"]])
def test_runs_saved_before_best_by_upgrade_to_their_tasks_measure(overrides):
    """eval.best_by came after task=pomdp: a run saved without it keeps what its task and env
    configs set today (return for tasks without a success criterion), not success everywhere."""
    from src.config import best_by_or_default, upgrade_saved_config
    today = compose_cfg(overrides)
    old = OmegaConf.to_container(today, resolve=True)
    del old["eval"]["best_by"]
    assert upgrade_saved_config(OmegaConf.create(old)).eval.best_by == today.eval.best_by
    assert best_by_or_default(None, today.task.name, today.env.name) == today.eval.best_by
    assert best_by_or_default("success", "pomdp", "halfcheetah_v") == "success"  # a saved value wins
