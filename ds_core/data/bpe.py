"""Train the shipped model's byte-level BPE tokenizer with the `tokenizers` library and save it in the
Hugging Face layout, so ds_core.Tokenizer and transformers' AutoTokenizer read it and give the same ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

BOS, EOS = "<bos>", "<eos>"  # ids 0 and 1, as in DeepSeek-V3's config


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE: any text encodes (unknown characters fall back to bytes); every id sequence starts with BOS."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts, trainer)
    # BOS comes from the post-processor inside tokenizer.json, so every library that reads the file adds it.
    tk.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                      special_tokens=[(BOS, tk.token_to_id(BOS))])
    return tk


def save_tokenizer(tk: Tokenizer, path: str | Path) -> None:
    """tokenizer.json + tokenizer_config.json (PreTrainedTokenizerFast: no remote code needed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tk.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS, "pad_token": EOS,
        "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
    }, indent=2) + "\n")
