"""Speed: the benchmarks (decode against transformers, naive vs absorbed MLA, dense vs window prefill) and the fast
paths (compiled decode, gathered MoE experts), each tested equal to the reference path it replaces."""
