"""The DeepSeek-V3 architecture, one module per mechanism."""

from .model import DeepSeekModel

__all__ = ["DeepSeekModel"]
