"""ds_core: a readable, instrumented DeepSeek-V2/V3 inference engine.

    from ds_core import DeepSeekModel, Tokenizer, generate
    model = DeepSeekModel.from_pretrained("assets/ds-tiny")
"""

from .checkpoint import CheckpointError
from .config import ConfigError, ModelConfig
from .generate import SamplingParams, Step, generate, generate_batch, generate_ids
from .model import DeepSeekModel
from .tokenizer import Tokenizer

__all__ = [
    "DeepSeekModel", "Tokenizer", "generate", "generate_batch", "generate_ids", "SamplingParams", "Step",
    "ModelConfig", "CheckpointError", "ConfigError",
]
