from .multi_episode import MultiEpisode
from .navigation import NavigationEnv, PointRobotEnv, WindEnv

__all__ = ["MultiEpisode", "NavigationEnv", "PointRobotEnv", "WindEnv"]
