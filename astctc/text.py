"""Text normalisation shared by training targets, language models and scoring.

One function, used everywhere: a model trained on normalised text is scored against references
normalised the same way, and an LM is trained on the same alphabet the acoustic model emits.
The default keeps letters (any script), digits and the apostrophe, lower-cases, and turns all
other punctuation into word breaks, which is the LibriSpeech / ESPnet convention for CTC.
"""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")


def normalize(text: str, lowercase: bool = True, keep: str = "'") -> str:
    """Lower-case, NFKC-normalise, drop punctuation except `keep`, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text)
    if lowercase:
        text = text.lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in keep or cat[0] in "LN" or cat in ("Mn", "Mc"):
            out.append(ch)
        else:
            out.append(" ")
    text = _SPACES.sub(" ", "".join(out)).strip()
    # an apostrophe only counts inside a word ("don't"), not as a quote mark
    text = re.sub(r"(^|\s)'+|'+(?=\s|$)", r"\1", text)
    return _SPACES.sub(" ", text).strip()
