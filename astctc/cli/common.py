"""Argument types, the help formatter and the options shared by several commands."""

from __future__ import annotations

import argparse

# Defaults of astctc.decode's BeamConfig, ALPHA_GRID and BETA_GRID, and astctc.data.synth's
# TRANSCRIPTS, repeated here so that the parser needs no torch (tests/test_cli_errors.py checks
# that they agree).
BEAM_WIDTH = 64
BEAM_PRUNE_LOGP = -10.0
TOKEN_MIN_LOGP = -5.0
HOTWORD_WEIGHT = 10.0
ALPHA_GRID = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
BETA_GRID = (-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
TRANSCRIPTS = ("words", "phonemes")

# What --data (and data.train / data.valid) take: astctc.data.sources.resolve_shards
SHARDS_HELP = (
    "shard set: a directory, its index.json or one .tar; a brace list (DIR/{000000..000003}.tar); "
    "an index.json URL or a directory URL ending in /; or a brace list of URLs or pipe: commands "
    "('https://host/train/{000000..000511}.tar', 'pipe:aws s3 cp s3://bucket/train/{000000..000511}.tar -'); "
    "a remote read waiting longer than ASTCTC_READ_TIMEOUT seconds (default 60, 0: no limit) is an error"
)


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help when it has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (
            "%(default)" in text
            or "default" in text
            or d is None
            or d is False
            or d is argparse.SUPPRESS
            or not action.option_strings
            or d == []
        ):
            return text
        if isinstance(d, (list, tuple)):
            d = " ".join(str(x) for x in d) if action.nargs else ",".join(str(x) for x in d)
            return f"{text} (default: {d})"
        return text + " (default: %(default)s)"


def add_parser(sub, name: str, help: str, fn, **kw) -> argparse.ArgumentParser:
    """A subcommand whose handler is fn(args)."""
    s = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter, **kw)
    s.set_defaults(fn=fn)
    return s


def yes_no(v: str) -> bool:
    if v.lower() in ("true", "yes", "1"):
        return True
    if v.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {v!r}")


def floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def beam_options(s: argparse.ArgumentParser) -> None:
    """Beam search + LM options shared by decode and transcribe."""
    s.add_argument("--lm", default=None, help="KenLM model (.bin/.arpa, or a directory with one) for beam search")
    s.add_argument("--alpha", type=float, default=None, help="LM weight (default: tuned value beside the LM, else 0.5)")
    s.add_argument("--beta", type=float, default=None, help="word bonus (default: tuned value, else 1.5)")
    s.add_argument("--beam-width", type=int, default=BEAM_WIDTH, help="hypotheses kept per frame")
    s.add_argument(
        "--beam-prune-logp",
        type=float,
        default=BEAM_PRUNE_LOGP,
        help="drop beams this far (log probability) below the best one",
    )
    s.add_argument(
        "--token-min-logp",
        type=float,
        default=TOKEN_MIN_LOGP,
        help="tokens less likely than this in a frame are not expanded",
    )
    s.add_argument("--prune-history", action="store_true", help="merge beams with equal LM context (faster)")
    s.add_argument("--hotwords", nargs="+", default=None, help="words to favour (may be outside the LM)")
    s.add_argument("--hotword-weight", type=float, default=HOTWORD_WEIGHT, help="score bonus of a hotword")
    s.add_argument("--workers", type=int, default=None, help="beam search processes (default: all cores)")


def beam_config(a: argparse.Namespace):
    from ..decode import BeamConfig

    return BeamConfig(
        beam_width=a.beam_width,
        alpha=a.alpha,
        beta=a.beta,
        beam_prune_logp=a.beam_prune_logp,
        token_min_logp=a.token_min_logp,
        prune_history=a.prune_history,
        hotwords=a.hotwords or [],
        hotword_weight=a.hotword_weight,
    )
