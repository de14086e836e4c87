"""Bad input on the command line: a clear one-line error naming the file, no traceback,
and nothing already done is lost. The table of bad inputs and their error lines is
tests/test_bad_input.py; here are the cases that need more than one line to check."""

import json

import numpy as np
import soundfile as sf

from astctc.cli import main


def _clip(path, seconds=0.5):
    sf.write(path, (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 0.1).astype("float32"), 16000)
    return path


def test_manifest_drops_empty_transcript_and_bad_audio_by_name(tmp_path, capsys, caplog):
    good = _clip(tmp_path / "good.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    rows = [
        {"id": "u1", "audio": str(good), "duration": 0.5, "text": "hello there"},
        {"id": "u2", "audio": str(good), "duration": 0.5, "text": "  ...  "},
        {"id": "u3", "audio": str(empty), "duration": 0.5, "text": "some words"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["manifest", "--in", str(src), "--out", str(tmp_path / "out.jsonl")]) == 0
    captured = capsys.readouterr()
    assert "1 utterances" in captured.out and "2 rejected" in captured.out
    assert "u2 skipped: empty transcript" in caplog.text
    assert "u3 skipped" in caplog.text and "empty.wav: empty audio file" in caplog.text
    kept = [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert kept == ["u1"]


def test_empty_transcript_in_training_data_is_skipped(tmp_path, caplog):
    import torch

    from astctc.data.pipeline import Featurizer
    from astctc.features import FeatureConfig
    from astctc.tokenizer import CharTokenizer

    f = Featurizer(FeatureConfig(), CharTokenizer.train(["ab"]))
    assert f({"id": "x1", "wav": torch.zeros(8000), "text": "?!"}) is None
    assert "x1 has an empty transcript" in caplog.text
    assert f({"id": "x2", "wav": torch.zeros(8000), "text": "ab"})["targets"].tolist() == [3, 4]


def _parsers(p, path=("astctc",)):
    """(command path, parser) for the parser and every subparser below it."""
    import argparse

    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_argument_of_every_command_has_help():
    import argparse

    from astctc.cli import build_parser

    missing, commands = [], 0
    for path, p in _parsers(build_parser()):
        commands += 1
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{' '.join(path)} {name}" for name, sub in action.choices.items() if not sub.description]
                continue
            if not action.help:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert commands > 20 and not missing, missing


def test_parser_and_help_import_no_torch():
    """`astctc --help` and `astctc <cmd> --help` stay fast: the parser imports only the
    standard library; the handlers import their modules when they run."""
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io\n"
        "import astctc.cli as c\n"
        "p = c.build_parser()\n"
        "for argv in ([], ['prepare'], ['download'], ['decode'], ['transcribe'], ['train']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        p.parse_args(argv + ['--help'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'torchaudio', 'tqdm'))\n"
        "heavy += sorted(m for m in sys.modules if m.startswith('astctc.') and not m.startswith('astctc.cli'))\n"
        "print(' '.join(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""


def test_cli_defaults_agree_with_the_modules():
    """The parser repeats a few module constants (so as not to import torch): they must agree."""
    from astctc.cli import common
    from astctc.data.synth import TRANSCRIPTS
    from astctc.decode import ALPHA_GRID, BETA_GRID, BeamConfig

    d = BeamConfig()
    assert (common.BEAM_WIDTH, common.BEAM_PRUNE_LOGP, common.TOKEN_MIN_LOGP, common.HOTWORD_WEIGHT) == (
        d.beam_width,
        d.beam_prune_logp,
        d.token_min_logp,
        d.hotword_weight,
    )
    assert tuple(common.ALPHA_GRID) == tuple(ALPHA_GRID) and tuple(common.BETA_GRID) == tuple(BETA_GRID)
    assert tuple(common.TRANSCRIPTS) == tuple(TRANSCRIPTS)


def test_corpora_are_under_download_and_prepare(tmp_path, capsys):
    import pytest

    from astctc.cli import build_parser

    p = build_parser()
    for verb, corpora in (
        ("download", {"librispeech", "fleurs", "speechcommands", "esc50", "ljspeech", "mini_librispeech", "an4"}),
        (
            "prepare",
            {"librispeech", "fleurs", "speechcommands", "esc50", "fsdd", "ljspeech", "mini_librispeech", "an4"},
        ),
    ):
        sub = dict(_parsers(p))[("astctc", verb)]
        assert {path[-1] for path, _ in _parsers(sub, (verb,))} - {verb} == corpora
    for old in ("fsdd", "esc50", "speechcommands"):  # the corpus-named commands are gone
        with pytest.raises(SystemExit):
            p.parse_args([old, "prepare", "--src", "x", "--out", "y"])
    capsys.readouterr()
    # FSDD's test speakers have no default: the recipe names them
    assert main(["prepare", "fsdd", "--src", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("astctc prepare: error:") and "--test-speakers" in err and "Traceback" not in err


def test_every_recipe_config_passes_the_checks():
    """The value checks run when a config is read: every shipped config must pass them."""
    from pathlib import Path

    from astctc.config import load_config
    from astctc.train.config import TrainConfig

    confs = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*/conf/*.yaml"))
    assert len(confs) > 5
    for conf in confs:
        load_config(TrainConfig, conf)


def test_nulls_and_empty_overrides(tmp_path):
    """What a user writes is read strictly (null only where a key allows it); a config saved
    by an earlier version (a checkpoint's, with data.tokenizer null) still loads; `key=` is the
    empty string for a str key and null for an optional one."""
    import pytest

    from astctc.config import from_dict, load_config
    from astctc.train.config import TrainConfig

    assert from_dict(TrainConfig, {"data": {"tokenizer": None}}).data.tokenizer is None
    with pytest.raises(ValueError, match=r"--set 'data.tokenizer=null': data.tokenizer: expected a string, got null"):
        load_config(TrainConfig, None, ["data.tokenizer=null"])
    cfg = load_config(TrainConfig, None, ["data.tokenizer=", "data.valid=", "model.ctc="])
    assert cfg.data.tokenizer == "" and cfg.data.valid is None and cfg.model.ctc is None
    with pytest.raises(ValueError, match=r"--set 'max_steps=': max_steps: expected an integer, got null"):
        load_config(TrainConfig, None, ["max_steps="])
    # a section set to null and then given a key is made again; a value is not a section
    assert load_config(TrainConfig, None, ["model.ctc=null", "model.ctc.dropout=0.2"]).model.ctc.dropout == 0.2
    with pytest.raises(ValueError, match=r"--set 'max_steps.x=1': max_steps is not a section"):
        load_config(TrainConfig, None, ["max_steps=3", "max_steps.x=1"])
    p = tmp_path / "c.yaml"
    p.write_text("max_steps: 0\n")
    with pytest.raises(ValueError, match=rf"^{p}: max_steps must be >= 1, not 0$"):
        load_config(TrainConfig, p)
    with pytest.raises(ValueError, match=r"^--set 'max_steps=-3': max_steps must be >= 1, not -3$"):
        load_config(TrainConfig, p, ["max_steps=-3"])  # the last word on a key is named


def test_kenlm_file_check_takes_what_kenlm_loads(tmp_path):
    """A KenLM binary's header, or an ARPA file's \\data\\ after blank and # lines."""
    import pytest

    from astctc.lm import KENLM_MAGIC, check_kenlm_file

    ok = {
        "a.arpa": b"\n# made by hand\n\\data\\\nngram 1=3\n",
        "b.bin": KENLM_MAGIC + b" format version 5\n\0\0",
    }
    for name, data in ok.items():
        (tmp_path / name).write_bytes(data)
        check_kenlm_file(tmp_path / name)
    for data in (b"", b"ngram 1=3\n\\data\\\n", b"\x1f\x8b\x08\0junk"):
        (tmp_path / "bad.arpa").write_bytes(data)
        with pytest.raises(ValueError, match="bad.arpa: .*not a KenLM model"):
            check_kenlm_file(tmp_path / "bad.arpa")


def test_integers_in_exponent_notation_and_yaml_merge_keys():
    """YAML 1.1 reads 1e3 as a string: it is an integer where one is expected (2.5 is not). A
    merge key (`<<: *base`) may be overridden, a key given twice may not, in a flow mapping too."""
    import pytest

    from astctc.config import load_config, read_yaml
    from astctc.train import TrainConfig

    assert load_config(TrainConfig, None, ["max_steps=1e3", "optim.lr=3e-4"]).max_steps == 1000
    with pytest.raises(ValueError, match=r"max_steps: expected an integer, got 2\.5"):
        load_config(TrainConfig, None, ["max_steps=2.5"])
    assert read_yaml("base: &b {lr: 0.1, wd: 0}\noptim:\n  <<: *b\n  lr: 0.2\n")["optim"] == {"lr": 0.2, "wd": 0}
    with pytest.raises(ValueError, match=r"--set 'optim=\{lr: 1, lr: 2\}': invalid YAML value: duplicate key 'lr'"):
        load_config(TrainConfig, None, ["optim={lr: 1, lr: 2}"])


def test_hub_revisions_follow_git_ref_rules():
    """A revision is a branch, tag or commit: huggingface_hub writes refs/<revision> in its cache,
    so one like ../../x wrote a file outside it."""
    import pytest

    from astctc.hub import parse_spec

    for good in ("main", "v1.0", "refs/pr/1", "feature/x-y_z", "0123456789abcdef0123456789abcdef01234567"):
        assert parse_spec(f"hf://org/x@{good}") == ("org/x", good)
    for bad in ("../../x", "/etc", "a/../b", "a..b", ".hidden", "a/.b", "x.lock", "a b", "a~1", "a:b", "a\\b", "@"):
        with pytest.raises(ValueError, match="is not a branch, tag or commit name"):
            parse_spec(f"hf://org/x@{bad}")
