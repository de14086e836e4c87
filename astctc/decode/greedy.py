"""Greedy (best path) CTC decoding, batched on the model's device."""

from __future__ import annotations

import torch
from torch import Tensor

from ..tokenizer import Tokenizer


def greedy_ids(log_probs: Tensor, lengths: Tensor, blank: int = 0) -> list[list[int]]:
    """Best path per utterance: argmax per frame, merge repeats, drop blanks. Batched on device."""
    best = log_probs.argmax(dim=-1)  # (B, T)
    B, T = best.shape
    keep = best != blank
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    keep &= torch.arange(T, device=best.device)[None, :] < lengths[:, None].to(best.device)
    best, keep = best.cpu(), keep.cpu()
    return [best[b][keep[b]].tolist() for b in range(B)]


def greedy_decode(log_probs: Tensor, lengths: Tensor, tokenizer: Tokenizer) -> list[str]:
    return [tokenizer.decode(ids) for ids in greedy_ids(log_probs, lengths, tokenizer.blank)]
