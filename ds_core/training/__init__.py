"""How the shipped model is made: training ds-tiny on the story corpus (ds_core.data), its induction guide, the
DSA indexer's training, and the model card that measures the result."""
