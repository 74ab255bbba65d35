"""Fine-tuning: the Ray-free training core (loop.py) and the Ray Train adapter (ray_train.py)."""
