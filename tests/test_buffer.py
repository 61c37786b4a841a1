import numpy as np
import pytest

from src.buffer import EpisodeReplay


def _episode(L, obs_dim=2, A=2, start=0.0):
    obs = start + np.arange(L + 1, dtype=np.float32)[:, None].repeat(obs_dim, 1)
    act = np.full((L, A), start, np.float32)
    rew = start + np.arange(L, dtype=np.float32)
    term = np.zeros(L, np.float32)
    term[-1] = 1
    return obs, act, rew, term


def test_whole_episodes_padded_with_masks():
    buf = EpisodeReplay(100, (2,), np.float32, 2, 10, seed=0)
    buf.add_episode(*_episode(3, start=100))
    buf.add_episode(*_episode(5, start=200))
    b = buf.sample(64)
    assert b["obs"].shape == (64, 6, 2) and b["act"].shape == (64, 5, 2)
    assert b["rew"].shape == b["term"].shape == b["mask"].shape == (64, 5)
    short = b["obs"][:, 0, 0] == 100
    assert short.any() and (~short).any()
    assert (b["mask"][short] == [1, 1, 1, 0, 0]).all() and (b["mask"][~short] == 1).all()
    # obs o_0..o_L in order, next observations stored once; padding zeroed
    assert (b["obs"][short, :4, 0] == [100, 101, 102, 103]).all() and (b["obs"][short, 4:] == 0).all()
    assert (b["rew"][~short] == [200, 201, 202, 203, 204]).all()
    assert (b["term"][short] == [0, 0, 1, 0, 0]).all()
    assert (b["act"][short, 3:] == 0).all()


def test_storage_uses_one_slot_per_observation():
    buf = EpisodeReplay(100, (2,), np.float32, 2, 10)
    buf.add_episode(*_episode(3))
    buf.add_episode(*_episode(3))
    assert buf.write == 8 and buf.num_steps == 6


def test_sampling_is_uniform_over_episodes_with_replacement():
    buf = EpisodeReplay(1000, (2,), np.float32, 2, 10, seed=1)
    for i in range(4):
        buf.add_episode(*_episode(2 + 3 * i, start=100 * i))
    firsts = buf.sample(8000)["obs"][:, 0, 0]
    counts = np.array([(firsts == 100 * i).sum() for i in range(4)]) / 8000
    assert np.allclose(counts, 0.25, atol=0.03)


def test_oldest_episodes_are_evicted_when_full():
    buf = EpisodeReplay(12, (2,), np.float32, 2, 5)
    for i in range(5):
        buf.add_episode(*_episode(3, start=10 * i))  # 4 slots each -> 3 fit
    assert len(buf) == 3 and buf.num_steps == 9
    firsts = set(buf.sample(200)["obs"][:, 0, 0].tolist())
    assert firsts == {20.0, 30.0, 40.0}


def test_state_dict_roundtrip_continues_identically():
    a = EpisodeReplay(50, (2,), np.float32, 2, 10, seed=3)
    for i in range(6):
        a.add_episode(*_episode(2 + i % 3, start=i))
    b = EpisodeReplay(50, (2,), np.float32, 2, 10, seed=99)
    b.load_state_dict(a.state_dict())
    for _ in range(3):  # the same episodes and the same sampling stream, draw after draw
        x, y = a.sample(16), b.sample(16)
        assert set(x) == {"obs", "act", "rew", "term", "mask"}
        for key in x:
            assert np.array_equal(x[key], y[key]), key


def test_bad_inputs():
    with pytest.raises(ValueError, match="capacity"):
        EpisodeReplay(0, (2,), np.float32, 2, 10)
    buf = EpisodeReplay(20, (2,), np.float32, 2, 10)
    with pytest.raises(ValueError, match="inconsistent"):
        obs, act, rew, term = _episode(3)
        buf.add_episode(obs[:-1], act, rew, term)
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(2)


# ---- sub-sequence windows (train.seq_len; pomdp-baselines' sampled_seq_len)

def test_windows_are_masked_at_episode_ends_and_padded_for_short_episodes():
    buf = EpisodeReplay(100, (2,), np.float32, 2, 10, seed=0, seq_len=4)
    buf.add_episode(*_episode(6, start=100))   # 3 valid starts (0, 1, 2): full windows only
    buf.add_episode(*_episode(2, start=200))   # shorter than the window: start 0, 2 real steps
    b = buf.sample(256)
    assert b["obs"].shape == (256, 5, 2) and b["mask"].shape == (256, 4)
    first = b["obs"][:, 0, 0]
    short = first == 200
    assert short.any() and set(first[~short]) == {100, 101, 102}
    assert (b["mask"][short] == [1, 1, 0, 0]).all() and (b["mask"][~short] == 1).all()
    assert (b["obs"][short, :3, 0] == [200, 201, 202]).all() and (b["obs"][short, 3:] == 0).all()
    assert (b["term"][short] == [0, 1, 0, 0]).all()
    # a window ending on the long episode's last step carries its terminal; its obs run to o_L
    last = first == 102
    assert (b["term"][last] == [0, 0, 0, 1]).all() and (b["obs"][last, :, 0] == [102, 103, 104, 105, 106]).all()
    assert (b["rew"][last] == [102, 103, 104, 105]).all()


def test_windows_of_only_short_episodes_shrink_to_the_longest():
    buf = EpisodeReplay(100, (2,), np.float32, 2, 10, seed=0, seq_len=64)
    buf.add_episode(*_episode(3))
    buf.add_episode(*_episode(5))
    b = buf.sample(32)
    assert b["mask"].shape == (32, 5) and b["obs"].shape == (32, 6, 2)
    assert set(b["mask"].sum(1)) == {3.0, 5.0}


def test_valid_starts_are_drawn_uniformly_over_the_replay():
    """Episodes of 10, 20 and 3 steps with S = 5: 6 + 16 + 1 valid starts, each drawn with
    probability 1/23 (the short episode's only start included)."""
    buf = EpisodeReplay(1000, (2,), np.float32, 2, 30, seed=3, seq_len=5)
    for L, start in ((10, 1000), (20, 2000), (3, 3000)):
        buf.add_episode(*_episode(L, start=start))
    first = buf.sample(46_000)["obs"][:, 0, 0]
    starts = [1000 + k for k in range(6)] + [2000 + k for k in range(16)] + [3000]
    counts = np.array([(first == s).sum() for s in starts])
    assert counts.sum() == 46_000                       # nothing else is ever a start
    expected = 46_000 / 23
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 45                                    # 22 degrees of freedom: p ≈ 0.003


def test_seq_len_null_samples_exactly_as_before():
    """seq_len=None draws the same whole episodes, from the same random stream, as the buffer
    before windows existed (a uniform episode index per row)."""
    buf = EpisodeReplay(100, (2,), np.float32, 2, 10, seed=7)
    for L, start in ((3, 100), (5, 200), (4, 300)):
        buf.add_episode(*_episode(L, start=start))
    b = buf.sample(16)
    pick = np.random.default_rng(7).integers(3, size=16)
    assert (b["obs"][:, 0, 0] == np.array([100, 200, 300])[pick]).all()
    assert b["mask"].shape == (16, 5)


def test_bad_seq_len_is_refused():
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="train.seq_len"):
            EpisodeReplay(100, (2,), np.float32, 2, 10, seq_len=bad)
