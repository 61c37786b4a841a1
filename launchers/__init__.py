"""Scripted sweeps: launch ``python -m src.train -m ...`` from a frozen snapshot of the code.

``python -m launchers.sweep``  any sweep (the overrides you give), local or SLURM
``python -m launchers.paper``  the SHM paper's pomdp-baselines sweeps (meta, credit)
"""
