"""The package's version, in a module of its own so that any layer may read it (``pyproject.toml`` does too)."""

__version__ = "0.2.0"
