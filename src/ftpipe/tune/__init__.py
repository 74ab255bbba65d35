"""Hyperparameter sweeps: a search space over dotted config paths, run by Ray Tune."""
