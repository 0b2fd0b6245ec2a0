"""Attention backends, chosen per forward call. Each takes positions and decides which pairs to compute.

    model(ids, backend="dense")                                   # the reference
    model(ids, backend=get_backend("window", window=32, n_global=4))
    model(ids, backend=WindowAttention(32, n_global=4, temperature=0.5))
    model(ids, backend=get_backend("dsa", indexers="assets/ds-tiny", top_k=32))   # needs a trained indexer
"""

from .block_local import BlockLocalAttention
from .dense import DenseAttention, check_temperature
from .dsa import DSAAttention
from .window import WindowAttention

BACKENDS = {"dense": DenseAttention, "window": WindowAttention, "dsa": DSAAttention, "block_local": BlockLocalAttention}


def get_backend(backend=None, **options):
    """None, a name (with its options) or a backend instance -> a backend instance."""
    if backend is None:
        backend = "dense"
    if not isinstance(backend, str):
        return backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    try:
        return BACKENDS[backend](**options)
    except TypeError as e:  # a missing or unknown option: name what the backend takes
        raise ValueError(f"attention backend {backend!r}: {e}") from None


__all__ = ["DenseAttention", "WindowAttention", "DSAAttention", "BlockLocalAttention", "BACKENDS", "get_backend", "check_temperature"]
