"""Attention backends, chosen per forward call. Each takes positions and decides which pairs to compute; what
every backend is handed and answers (AttentionBackend, Positions) is written down in base.py.

    model(ids, backend="dense")                                   # the reference
    model(ids, backend=get_backend("window", window=32, n_global=4))
    model(ids, backend=WindowAttention(32, n_global=4, temperature=0.5))
    model(ids, backend=get_backend("dsa", indexers="assets/ds-tiny", top_k=32))   # needs a trained indexer
"""

from .base import AttentionBackend, Positions, check_temperature
from .block_local import BlockLocalAttention
from .dense import DenseAttention
from .dsa import DSAAttention
from .window import WindowAttention

BACKENDS = {"dense": DenseAttention, "window": WindowAttention, "dsa": DSAAttention, "block_local": BlockLocalAttention}


def get_backend(backend=None, **options) -> AttentionBackend:
    """None, a name (with its options) or a backend instance -> a backend instance."""
    if backend is None:
        backend = "dense"
    if isinstance(backend, AttentionBackend):
        return backend
    if not isinstance(backend, str):
        raise ValueError(f"attention backend must be None, a name ({', '.join(BACKENDS)}) or an AttentionBackend, "
                         f"got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    try:
        return BACKENDS[backend](**options)
    except TypeError as e:  # a missing or unknown option: name what the backend takes
        raise ValueError(f"attention backend {backend!r}: {e}") from None


__all__ = ["AttentionBackend", "Positions", "DenseAttention", "WindowAttention", "DSAAttention", "BlockLocalAttention",
           "BACKENDS", "get_backend", "check_temperature"]
