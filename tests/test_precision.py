"""bf16 mixed precision (``precision=bf16``, torchkit/precision.py).

Every memory layer of conf/model/ runs its bf16 path (under CPU autocast on every CPU, emulated where
it has no bf16 units; and under CUDA autocast where a GPU is present) within a stated tolerance
of its float32 path, with its recurrent state in float32; the heads run bf16 hidden layers and a
float32 output layer; a whole SAC update under bf16 leaves float32 parameters, gradients and
optimiser state; bad values and devices without bf16 are handled as documented.

Tolerances, as the relative error of the norm ||a_bf16 − a_fp32|| / ||a_fp32|| (bf16 keeps 8
mantissa bits: one rounding is ≤ 2⁻⁹ ≈ 2e-3):
  memory outputs and final states (sequence forward, single step)   ≤ 1e-2
  the whole parameter gradient (all parameters as one vector)        ≤ 3e-2
  each parameter's gradient                                          ≤ 5e-2
  SAC losses after one update                                        ≤ 3e-2
Per-parameter errors reach a few 1e-2 where a gradient is a sum with cancellations (LayerNorm
gains in GPT-2; ReLU units whose pre-activation changes sign under bf16 rounding, a 1/√N effect of
the test's small batch). Memories whose gradients cancel far more (the sum-normalised keys and
queries of SHM and FWP, mLSTM's scale-invariant readout: 5-40 % in bf16) run their input
projections in float32, and these tests hold them to the same bounds.
"""
import logging

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.agent import RecurrentActorCritic
from src.algos.sac import SAC
from src.algos.sacd import SACDiscrete
from src.algos.td3 import TD3
from src.config import ConfigError, check_precision, upgrade_saved_config, validate
from tests.helpers import CONF, compose_cfg, options
from torchkit.memory import reference_init_
from torchkit.memory.shm import SHM
from torchkit.nets import MLP
from torchkit.precision import autocast_dtype, bf16_supported

OUT_TOL, GRAD_TOL, PARAM_TOL, LOSS_TOL = 1e-2, 3e-2, 5e-2, 3e-2
D, B, T, W = 24, 16, 48, 32

def rel(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def bf16(device="cpu"):
    return torch.autocast(device, dtype=torch.bfloat16)


# Modest sizes: large enough that bf16 rounding averages as in training, small enough for seconds.
SIZES = {
    "shm": {"memory": {"mem_size": 8, "num_thetas": 16, "theta_sampling": "fixed"}},
    "fwp": {"memory": {"mem_size": 8}},
    "mlstm": {"memory": {"mem_size": 8}},
    "ffm": {"memory": {"trace_size": 8, "context_size": 2}},
    "s6": {"memory": {"d_state": 8}},
    "gpt2": {"memory": {"n_head": 2, "window": 64}},
}


def build(name):
    cfg = OmegaConf.create({"model": OmegaConf.load(CONF / "model" / f"{name}.yaml")})
    cfg.model = OmegaConf.merge(cfg.model, {"width": W}, SIZES.get(name, {}))
    torch.manual_seed(0)
    layer = instantiate(cfg.model.memory, input_size=D)
    reference_init_(layer)  # agent.init=reference, the training default
    return layer.eval()     # dropout off (GPT-2): a deterministic map to compare


def test_every_model_config_is_covered():
    assert set(options("model")) <= {"gru", "lstm", "mlp", *SIZES}


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", options("model"))
def test_memory_bf16_matches_fp32_and_keeps_fp32_state(name, device):
    torch.set_num_threads(1)
    layer = build(name).to(device)
    params = [p for p in layer.parameters()]
    gen = torch.Generator().manual_seed(1)
    # under autocast the memory input comes from bf16 embedders; both paths read the same values
    x16 = torch.randn(B, T, D, generator=gen).bfloat16().to(device)
    x = x16.float()
    probe = torch.randn(B, T, layer.output_size, generator=gen).to(device)

    y32, s32 = layer(x)
    g32 = torch.autograd.grad((y32 * probe).sum(), params, allow_unused=True)
    with bf16(device):
        y16, s16 = layer(x16)
    g16 = torch.autograd.grad((y16.float() * probe).sum(), params, allow_unused=True)

    assert rel(y16, y32) <= OUT_TOL, rel(y16, y32)
    for a, b in zip(s16, s32):
        assert a.dtype == b.dtype, f"{name}: the state became {a.dtype} under bf16"
        if a.is_floating_point():
            assert a.dtype == torch.float32 and rel(a, b) <= OUT_TOL
    errors = {n: rel(a, b) for (n, _), a, b in zip(layer.named_parameters(), g16, g32) if b is not None}
    assert all(a is None or a.dtype == torch.float32 for a in g16)
    assert max(errors.values()) <= PARAM_TOL, errors
    flat = lambda gs: torch.cat([g.flatten() for g in gs if g is not None])  # noqa: E731
    assert rel(flat(g16), flat(g32)) <= GRAD_TOL

    # single step from the sequence's state (the acting-path layout, under autocast)
    ys32, ss32 = layer.step(x[:, 0], s32)
    with bf16(device):
        ys16, ss16 = layer.step(x16[:, 0], tuple(s.clone() for s in s32))
    assert rel(ys16, ys32) <= OUT_TOL
    assert all(a.dtype == b.dtype for a, b in zip(ss16, ss32))
    assert all(rel(a, b) <= OUT_TOL for a, b in zip(ss16, ss32) if a.is_floating_point())


def test_shm_scan_and_state_stay_fp32_under_autocast():
    """The recurrence (C++ or PyTorch scan) sees float32 factors and keeps a float32 state."""
    layer = build("shm")
    seen = []
    orig = type(layer)._factors

    def spy(self, x, step=False):
        out = orig(self, x, step)
        seen.extend(t.dtype for t in out)
        return out

    layer._factors = spy.__get__(layer)
    with bf16():
        _, (M,) = layer(torch.randn(2, 5, D).bfloat16())
    assert M.dtype == torch.float32 and set(seen) == {torch.float32}


def test_heads_run_bf16_hidden_layers_and_a_fp32_output_layer():
    torch.manual_seed(0)
    mlp = MLP(40, [64, 64], 1)
    x = torch.randn(300, 40)
    y32 = mlp(x)
    g32 = torch.autograd.grad(y32.sum(), list(mlp.parameters()))
    with bf16():
        y16 = mlp(x)
    g16 = torch.autograd.grad(y16.sum(), list(mlp.parameters()))
    assert y16.dtype == torch.float32                 # what the losses read
    assert 0 < rel(y16, y32) <= OUT_TOL               # bf16 did run (not bit-equal), and closely
    assert all(g.dtype == torch.float32 for g in g16)
    assert max(rel(a, b) for a, b in zip(g16, g32)) <= GRAD_TOL


def _agent_and_batch(memory, discrete=False):
    torch.manual_seed(0)
    agent = RecurrentActorCritic((3,), 2, {"action": 4, "reward": 4, "obs": 8, "current_obs": 8}, memory,
                                 policy_layers=(32, 32), q_layers=(32, 32), discrete=discrete)
    g = torch.Generator().manual_seed(2)
    Bb, Tt = 4, 12
    act = torch.rand(Bb, Tt, 2, generator=g) * 2 - 1
    if discrete:
        act = torch.nn.functional.one_hot(act[..., 0].gt(0).long(), 2).float()
    batch = {"obs": torch.randn(Bb, Tt + 1, 3, generator=g), "act": act,
             "rew": torch.randn(Bb, Tt, generator=g), "term": torch.zeros(Bb, Tt),
             "mask": torch.ones(Bb, Tt)}
    return agent, batch


MEMORIES = {"shm": lambda d: SHM(d, 16, mem_size=4, num_thetas=8, theta_sampling="fixed"),
            "gru": lambda d: instantiate({"_target_": "torchkit.memory.rnn.GRU", "hidden_size": 16}, input_size=d)}


@pytest.mark.parametrize("algo", [SAC, SACDiscrete, TD3])
@pytest.mark.parametrize("memory", sorted(MEMORIES))
def test_sac_update_under_bf16_keeps_fp32_weights_and_optimiser_state(memory, algo, bf16_path):
    torch.set_num_threads(1)
    discrete = algo is SACDiscrete
    stats, agents = {}, {}
    for precision in ("fp32", "bf16"):
        agent, batch = _agent_and_batch(MEMORIES[memory], discrete)
        sac = algo(agent, precision=precision, **({"policy_delay": 1} if algo is TD3 else {}))
        torch.manual_seed(3)
        stats[precision] = {k: float(v) for k, v in sac.update(batch).items()}
        agents[precision] = agent
    assert sac.autocast_dtype == torch.bfloat16
    for name, p in agents["bf16"].named_parameters():
        assert p.dtype == torch.float32, name
        assert p.grad is None or p.grad.dtype == torch.float32, name
    opts = (sac.actor_opt, sac.critic_opt) + ((sac.alpha_opt,) if algo is not TD3 else ())
    for opt in opts:
        for state in opt.state.values():
            assert all(v.dtype == torch.float32 for k, v in state.items() if k != "step"), state.keys()
    if algo is TD3:  # its actor (and policy stats) moved on this update: policy_delay 1 below
        assert all(p.dtype == torch.float32 for p in sac.actor_target.parameters())
    else:
        assert sac.log_alpha.dtype == torch.float32
    # the bf16 path ran (its numbers differ from fp32) and stayed close to it
    assert stats["bf16"] != stats["fp32"]
    for key in ("qf1_loss", "qf2_loss", "policy_loss", "q_grad_norm", "pi_grad_norm"):
        a, b = stats["bf16"][key], stats["fp32"][key]
        # TD3's actor gradient is dQ/da through the critic's bf16 hidden layers only (no entropy term),
        # a ~1e-5 signal at init: bf16 rounding moves it by a few per cent
        tol = 0.1 if algo is TD3 and key == "pi_grad_norm" else LOSS_TOL
        assert abs(a - b) <= tol * abs(b), (key, a, b)
    # the fp32 run is unchanged by the precision option (the same update as before it existed)
    agent, batch = _agent_and_batch(MEMORIES[memory], discrete)
    plain = algo(agent, **({"policy_delay": 1} if algo is TD3 else {}))
    torch.manual_seed(3)
    assert {k: float(v) for k, v in plain.update(batch).items()} == stats["fp32"]


@pytest.mark.parametrize("algo", [SAC, SACDiscrete, TD3])
def test_critic_forward_after_its_step_reads_the_new_weights_under_bf16(algo, bf16_path):
    """The actor loss reads the critic after its optimiser step, inside the same autocast region.
    Autocast caches bf16 copies of parameters keyed by tensor, not version: without clearing the
    cache after the step, that second critic forward would use the weights from before it."""
    torch.set_num_threads(1)
    agent, batch = _agent_and_batch(MEMORIES["gru"], discrete=algo is SACDiscrete)
    sac = algo(agent, precision="bf16", **({"policy_delay": 1} if algo is TD3 else {}))
    calls = []
    agent.critic.encoder.register_forward_hook(
        lambda mod, args, kwargs, out: calls.append((args, kwargs, out[0].detach().clone())), with_kwargs=True)
    torch.manual_seed(3)
    sac.update(batch)
    assert len(calls) == 2  # the critic loss's forward, then the actor loss's
    (_, _, before), (args, kwargs, after) = calls
    with bf16(), torch.no_grad():
        fresh = agent.critic.encoder(*args, **kwargs)[0]  # the updated critic, a new autocast region
    assert torch.equal(after, fresh)
    assert not torch.equal(before, fresh)  # the step did move the features


def test_bf16_without_device_support_falls_back_to_fp32_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert not bf16_supported(torch.device("cpu"))
    agent, batch = _agent_and_batch(MEMORIES["gru"])
    with caplog.at_level(logging.WARNING, logger="torchkit.precision"):
        sac = SAC(agent, precision="bf16")
    assert sac.autocast_dtype is None
    assert "no native bfloat16" in caplog.text and "float32" in caplog.text
    sac.update(batch)  # trains, in float32


@pytest.mark.parametrize("amx", [True, False])
def test_auto_precision_is_bf16_on_amx_cpus_only(monkeypatch, caplog, amx):
    """precision=auto: bf16 where bf16 GEMMs are several times faster (AMX tiles, bf16 GPUs), float32
    on other CPUs (this AMD EPYC's AVX512-BF16 gains 2.9x on GEMMs, ~1.4x per update); logged."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    with caplog.at_level(logging.INFO, logger="torchkit.precision"):
        dtype = autocast_dtype("auto", "cpu")
    assert dtype == (torch.bfloat16 if amx else None)
    assert f"precision=auto: {'bf16' if amx else 'fp32'} on cpu" in caplog.text
    if not torch.cuda.is_available():
        assert autocast_dtype("auto", "cuda") is None
    check_precision(compose_cfg(["task=popgym", "env=repeat_previous_easy", "precision=auto"]))  # PPO: float32


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="precision='fp16'.*fp32, bf16"):
        autocast_dtype("fp16", "cpu")
    cfg = compose_cfg(["experiment=smoke", "precision=fp16"])
    with pytest.raises(ConfigError, match="precision='fp16'.*precision=bf16"):
        validate(cfg)


def test_precision_is_a_config_key_defaulting_to_auto_and_off_policy_only():
    assert compose_cfg([]).precision == "auto"  # bf16 on GPUs and AMX CPUs, fp32 elsewhere
    check_precision(compose_cfg(["precision=bf16"]))                       # SAC
    check_precision(compose_cfg(["task=credit", "precision=bf16"]))        # SAC-Discrete
    check_precision(compose_cfg(["task=pomdp", "algo=td3", "precision=bf16"]))  # TD3
    with pytest.raises(ConfigError, match="algo=ppo trains in float32"):
        check_precision(compose_cfg(["task=popgym", "env=repeat_previous_easy", "precision=bf16"]))


def test_runs_saved_before_the_key_resume_as_fp32():
    saved = OmegaConf.create(OmegaConf.to_container(compose_cfg([])))  # as read from .hydra/config.yaml
    del saved["precision"]
    assert upgrade_saved_config(saved).precision == "fp32"


def test_profile_update_benchmark_names_the_scan_and_the_time_per_update():
    from benchmarks.profile_update import main
    report = main(["--updates", "1", "--rows", "40", "--extra", "experiment=smoke", "model.memory.mem_size=4"])
    import re
    per_update = float(re.search(r"([0-9.]+) ms of self CPU time per update", report).group(1))
    assert per_update > 0  # the profiler saw the update
    assert "Adam" in report and "aten::" in report  # the optimiser step and the ops are in the table


def test_train_speed_benchmark_times_bf16_beside_fp32_and_each_update_to_its_end(monkeypatch, bf16_path):
    """benchmarks/train_speed.py: one row per precision, each update timed between two device
    synchronisations (on a GPU its kernels run asynchronously: an unsynchronised timer would read the
    launch time, and the interleaved precisions would be charged each other's queued work)."""
    from benchmarks import train_speed

    synced = []
    monkeypatch.setattr(train_speed, "sync", lambda device: synced.append(torch.device(device)))
    rows = train_speed.measure("wind", "gru", 2, ["experiment=smoke", "device=cpu"], ("fp32", "bf16"))
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    assert all(r["sec_per_update"] > 0 and r["hours"] > 0 for r in rows)
    assert synced == [torch.device("cpu")] * (2 * 2 * 2)  # before and after each timed update, per precision
