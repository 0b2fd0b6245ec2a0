"""A thin wrapper over the `tokenizers` library: tokenizer.json plus the special tokens named beside it."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers.decoders import DecodeStream


class Tokenizer:
    def __init__(self, tk: HFTokenizer, bos_token: str | None = None, eos_token: str | None = None,
                 add_bos: bool = False):
        self.tk = tk
        self.bos_token_id = tk.token_to_id(bos_token) if bos_token else None
        self.eos_token_id = tk.token_to_id(eos_token) if eos_token else None
        self.add_bos = add_bos and self.bos_token_id is not None

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Tokenizer":
        """Read tokenizer.json and, when present, tokenizer_config.json (bos/eos tokens, add_bos_token)."""
        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(f"missing file: {path / 'tokenizer.json'} (ds_core reads fast-tokenizer files)")
        tk = HFTokenizer.from_file(str(path / "tokenizer.json"))
        conf = {}
        if (path / "tokenizer_config.json").is_file():
            conf = json.loads((path / "tokenizer_config.json").read_text())

        def token(key):  # written either as a string or as {"content": ...}
            v = conf.get(key)
            return v.get("content") if isinstance(v, dict) else v

        return cls(tk, token("bos_token"), token("eos_token"), bool(conf.get("add_bos_token", False)))

    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        ids = self.tk.encode(text).ids
        if self.add_bos and (not ids or ids[0] != self.bos_token_id):
            ids = [self.bos_token_id] + ids
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tk.decode(ids, skip_special_tokens=True)

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each id's own text, for axis labels."""
        return [self.tk.decode([i], skip_special_tokens=False) for i in ids]

    def stream(self) -> "TextStream":
        return TextStream(self)


class TextStream:
    """Turns ids arriving one at a time into text, holding back a character split across tokens.

    The pieces returned by add(), followed by finish(), concatenate to tok.decode(all the ids).
    """

    def __init__(self, tok: Tokenizer):
        self.tok, self.ds = tok, DecodeStream(skip_special_tokens=True)
        self.ids: list[int] = []
        self.emitted: list[str] = []

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.ds.step(self.tok.tk, token_id) or ""
        self.emitted.append(text)
        return text

    def finish(self) -> str:
        """The text still held back (an incomplete character at the end shows as U+FFFD, as decode shows it)."""
        full, emitted = self.tok.decode(self.ids), "".join(self.emitted)
        rest = full[len(emitted):] if full.startswith(emitted) else ""
        self.emitted.append(rest)
        return rest
