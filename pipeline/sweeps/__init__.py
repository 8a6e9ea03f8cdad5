"""Hydra sweeps on Optuna (hydra/sweeper=optuna): the search space, the persistent study and its trials'
pruning. Hydra's own Optuna plugin pins optuna<3, so the sweeper is the project's (optuna_sweeper.py).
"""
