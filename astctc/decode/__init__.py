"""CTC decoding: batched greedy search, beam search with a KenLM n-gram (pyctcdecode), alpha/beta
tuning, and decoding a whole shard set.

    greedy     best path, on the model's device
    beam       BeamSearch over log-probabilities on the CPU, with a process pool
    tune       the alpha x beta grid search and its record beside the LM
    evaluate   decode_set: forward pass -> search -> report for a shard set
"""

from .beam import DEFAULT_ALPHA, DEFAULT_BETA, BeamConfig, BeamSearch, check_vocabulary, collapse_runs
from .evaluate import DecodeOptions, decode_set
from .greedy import greedy_decode, greedy_ids
from .hypothesis import Hypothesis, Word
from .tune import ALPHA_GRID, BETA_GRID, TuneResult, record_tuning, tune

__all__ = [
    "ALPHA_GRID",
    "BETA_GRID",
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
    "BeamConfig",
    "BeamSearch",
    "DecodeOptions",
    "Hypothesis",
    "TuneResult",
    "Word",
    "check_vocabulary",
    "collapse_runs",
    "decode_set",
    "greedy_decode",
    "greedy_ids",
    "record_tuning",
    "tune",
]
