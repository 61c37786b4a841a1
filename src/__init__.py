"""memrl application: training entry point, agent, algorithms, replay, loop, logging."""
