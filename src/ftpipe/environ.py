"""Environment variables set for a block of code, and put back as they were after it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def restored_environ(*names: str) -> Iterator[None]:
    """Put `names` back as they were on entry when the block ends, error or not.

    The block may set or unset them; an unset one is unset again. For settings one process
    needs for a while only: a test, a notebook or a pipeline's stages may run several times in
    one process.

    Args:
        names: The environment variables to restore.

    Yields:
        Nothing.
    """
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
