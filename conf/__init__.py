"""The shipped defaults, ``default.toml``, read with :mod:`importlib.resources`."""
