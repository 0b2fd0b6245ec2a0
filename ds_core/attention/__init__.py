"""Attention backends, chosen per forward call. Each takes positions and decides which pairs to compute."""

from .dense import DenseAttention

BACKENDS = {"dense": DenseAttention}


def get_backend(backend=None):
    """None or a name -> a backend instance; an instance passes through."""
    if backend is None:
        return DenseAttention()
    if isinstance(backend, str):
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        return BACKENDS[backend]()
    return backend


__all__ = ["DenseAttention", "BACKENDS", "get_backend"]
