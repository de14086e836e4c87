"""What a decoder returns: the text, its words with times, and a score."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Word:
    word: str
    start: float  # seconds
    end: float


@dataclass
class Hypothesis:
    text: str
    words: list[Word]
    score: float  # acoustic + weighted LM score of the best beam (natural log)
