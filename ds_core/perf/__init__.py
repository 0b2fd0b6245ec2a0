"""Performance lab: measurements of the running engine (decode speed against transformers, ...)."""
