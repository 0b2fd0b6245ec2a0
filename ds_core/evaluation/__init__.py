"""What a model is worth and what a config implies: perplexity, recall by distance, expert load and greedy
continuations on the story corpus; parameter counts, KV-cache bytes and weight tables from config.json alone."""
