"""The shipped model's data: a seeded story generator (stories), its word lists (words), long-range recall
probes (recall) and the BPE tokenizer trained on it (bpe)."""
