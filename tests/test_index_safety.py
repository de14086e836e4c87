"""A shard index is data, never a command: shard names an index.json gives (fetched by URL,
read through a pipe: command or from a local file) are plain names relative to the index, and
a name that is a command, a URL, an absolute path or (from a remote index) climbs out with
`..` is one error naming the index and the name, before anything is read or run."""

from __future__ import annotations

import json
import shutil

import pytest

from astctc.data.shards import ShardDataset
from tests.range_server import RangeServer

ATTACKS = {  # directory served -> the one shard name its index.json gives
    "pipe": "pipe:id > {pwned}; false",  # issue 31's reproduction: run by /bin/sh
    "semicolon": "000000.tar; id > {pwned}; #",  # pasted into a pipe: command, a second command
    "quote": "000000.tar' ; id > {pwned}; '",
    "dotdot": "../x.tar",
    "absolute": "/etc/passwd",
    "other_host": "https://other.invalid/x.tar",
    "file": "file:///etc/passwd",
    "newline": "000000.tar\nid > {pwned}",
}


def _index(name: str) -> str:
    return json.dumps({"shards": [{"name": name, "count": 1}], "count": 1})


@pytest.fixture()
def evil(tmp_path, tiny_corpus, monkeypatch):
    """Each attack's index.json (beside a real shard) over http://127.0.0.1, the brief's own
    at the server's root; PWNED is the file a command that ran would write."""
    root, pwned = tmp_path / "served", tmp_path / "PWNED"
    root.mkdir()
    for case, name in ATTACKS.items():
        (root / case).mkdir()
        shutil.copy(tiny_corpus["shards"] / "000000.tar", root / case / "000000.tar")
        (root / case / "index.json").write_text(_index(name.format(pwned=pwned)))
    (root / "index.json").write_text(_index("pipe:id > PWNED; false"))  # relative: the cwd
    monkeypatch.chdir(tmp_path)
    with RangeServer(root) as server:
        yield {"url": server.url, "root": root, "pwned": pwned}


def _read(spec) -> str | None:
    """The one-line error reading `spec` as a shard set gives, or None if it reads."""
    try:
        list(ShardDataset(spec, shuffle=False))
    except (ValueError, OSError) as e:
        return str(e)
    return None


def _check(err: str | None, index: str, name: str, pwned) -> None:
    assert not pwned.exists(), f"a shard name from {index} ran a command: {pwned.read_text()!r}"
    assert err is not None, f"{index} with shard name {name!r} was read without an error"
    assert err.startswith(f"{index}: ") and repr(name) in err and "\n" not in err, err


@pytest.mark.parametrize("case", sorted(ATTACKS))
def test_a_url_index_names_no_command_url_or_outside_path(evil, case):
    index, name = f"{evil['url']}/{case}/index.json", ATTACKS[case].format(pwned=evil["pwned"])
    _check(_read(index), index, name, evil["pwned"])


@pytest.mark.parametrize("case", ["pipe", "semicolon", "quote", "dotdot", "absolute", "newline"])
def test_an_index_read_by_a_pipe_command_names_no_command(evil, case):
    index = f"pipe:cat {evil['root']}/{case}/index.json"
    name = ATTACKS[case].format(pwned=evil["pwned"])
    _check(_read(index), index, name, evil["pwned"])


@pytest.mark.parametrize("case", ["pipe", "absolute", "other_host", "file", "newline"])
def test_a_local_index_names_no_command_or_absolute_path(evil, case, monkeypatch):
    monkeypatch.chdir(evil["root"] / case)  # `--data index.json` in its own folder
    name = ATTACKS[case].format(pwned=evil["pwned"])
    _check(_read("index.json"), "index.json", name, evil["pwned"])


def test_decode_of_the_reported_index_runs_nothing(evil, tmp_path, capsys):
    """Issue 31: `astctc decode --data http://127.0.0.1:PORT/` wrote uid=0(root) into PWNED."""
    from astctc.cli import main
    from astctc.features import FeatureConfig
    from tests.conftest import tiny_ctc_model

    model, tok = tiny_ctc_model()
    model_dir = model.save(tmp_path / "model", FeatureConfig(), tok)
    data = f"{evil['url']}/"
    code = main(["decode", "--model", str(model_dir), "--data", data, "--out", str(tmp_path / "dec")])
    err = capsys.readouterr().err.strip()
    assert not (tmp_path / "PWNED").exists(), "decode ran the command in a shard name"
    assert code == 1 and err.count("\n") == 0
    assert err.startswith(f"astctc decode: error: {data}index.json: ") and "'pipe:id > PWNED; false'" in err


def test_a_local_shard_file_named_like_a_command_is_only_a_file(evil, tmp_path, monkeypatch):
    """A directory's tars are listed by name: 'pipe:...tar' there is a file, not a command."""
    shards = tmp_path / "listed"
    shards.mkdir()
    (shards / f"pipe:id > {evil['pwned'].name}; false; x.tar").write_bytes(b"not a tar")
    monkeypatch.chdir(shards)
    ds = ShardDataset(".", shuffle=False)
    assert list(ds) == [] and not (shards / evil["pwned"].name).exists()
    [(where, kind, _)] = ds.take_dropped()
    assert where == f"./pipe:id > {evil['pwned'].name}; false; x.tar" and kind == "shard_error"
