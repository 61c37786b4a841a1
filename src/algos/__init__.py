"""RL algorithms over whole-episode sequences."""
