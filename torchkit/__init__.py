"""Reusable torch building blocks for memory-based RL: memory layers, MLP heads, distributions."""
