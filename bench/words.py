"""The vocabulary of generated benchmark and test inputs, and a text noiser.

bench/prep.py writes its generated CSV from these words; tests/unit/data/test_prep_golden.py
writes its inputs from the first 15 (its recorded hashes depend on them). Extend the list only
at the end, so both keep generating the same bytes.
"""

import random
import string

WORDS = [
    "the",
    "a",
    "my",
    "order",
    "is",
    "late",
    "refund",
    "please",
    "card",
    "was",
    "charged",
    "twice",
    "hello",
    "help",
    "login",
    "password",
    "reset",
    "app",
    "crash",
    "good",
    "bad",
    "movie",
    "film",
    "great",
    "terrible",
    "plot",
    "acting",
    "story",
    "slow",
    "fun",
    "boring",
    "wonderful",
    "awful",
    "scene",
    "actor",
    "director",
    "music",
    "script",
    "ending",
    "brilliant",
]
"""Words a generated text is drawn from; the order matters to seeded draws."""


def noised(text: str, rng: random.Random, rate: float = 0.3) -> str:
    """`text` with each letter replaced by a random lowercase one with probability `rate`:
    synthetic out-of-domain text (bench/domain_signals.py, tests of the recommender)."""
    return "".join(
        rng.choice(string.ascii_lowercase) if c.isalpha() and rng.random() < rate else c
        for c in text
    )
