"""Tokenizers for CTC targets: characters or SentencePiece pieces, one interface, blank = 0.

Both reserve id 0 for the CTC blank and id 1 for <unk>, and both can list their labels as
strings (`labels()`), which is what beam-search decoders such as pyctcdecode need.
A tokenizer is saved as a file beside the model: `chars.txt` or `tokenizer.model`.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

BLANK = "<blank>"
UNK = "<unk>"
SPACE = "<space>"  # how " " is written in chars.txt, one token a line


class Tokenizer:
    blank: int = 0
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        """Ids of a collapsed CTC path (no blanks, no repeats) -> text."""
        raise NotImplementedError

    def labels(self) -> list[str]:
        raise NotImplementedError

    def save(self, directory: str | Path) -> Path:
        raise NotImplementedError


class CharTokenizer(Tokenizer):
    """Characters of normalised text; the word boundary is the space character."""

    filename = "chars.txt"

    def __init__(self, symbols: Sequence[str]):
        if list(symbols[:2]) != [BLANK, UNK]:
            raise ValueError(f"character vocabulary must start with {BLANK}, {UNK}")
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.vocab_size = len(self.symbols)

    @classmethod
    def train(cls, texts: Iterable[str], min_count: int = 1) -> "CharTokenizer":
        counts = Counter(ch for t in texts for ch in t)
        chars = sorted(c for c, n in counts.items() if n >= min_count and c != " ")
        return cls([BLANK, UNK, " "] + chars)

    def encode(self, text: str) -> list[int]:
        unk = self.index[UNK]
        return [self.index.get(ch, unk) for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        out = "".join(self.symbols[i] for i in ids if i > 1)
        return " ".join(out.split())

    def labels(self) -> list[str]:
        return ["", "⁇"] + self.symbols[2:]

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for s in self.symbols:
                f.write((SPACE if s == " " else s) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls([" " if s == SPACE else s for s in lines])


class SentencePieceTokenizer(Tokenizer):
    """SentencePiece unigram/BPE pieces; our id = SentencePiece id + 1 (blank takes 0)."""

    filename = "tokenizer.model"

    def __init__(self, model_bytes: bytes):
        import sentencepiece as spm

        self.model_bytes = model_bytes
        self.sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        if self.sp.unk_id() != 0:
            raise ValueError("SentencePiece model must have unk_id=0 (train it with astctc tokenizer)")
        self.vocab_size = self.sp.get_piece_size() + 1

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 256,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
    ) -> "SentencePieceTokenizer":
        import sentencepiece as spm

        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(list(texts)),
            model_writer=buf,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        return cls(buf.getvalue())

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([i - 1 for i in ids if i > 0])

    def labels(self) -> list[str]:
        return [""] + [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.model_bytes)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SentencePieceTokenizer":
        return cls(Path(path).read_bytes())


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load whichever tokenizer file `directory` holds (or a path to the file itself)."""
    p = Path(directory)
    if p.is_file():
        return CharTokenizer.load(p) if p.suffix == ".txt" else SentencePieceTokenizer.load(p)
    if (p / SentencePieceTokenizer.filename).exists():
        return SentencePieceTokenizer.load(p / SentencePieceTokenizer.filename)
    if (p / CharTokenizer.filename).exists():
        return CharTokenizer.load(p / CharTokenizer.filename)
    raise FileNotFoundError(f"{p}: no tokenizer ({CharTokenizer.filename} or {SentencePieceTokenizer.filename})")
