"""The mini recipe's stages end to end at toy size: markers, skipping, options, report."""

import pytest

from tests.recipe_run import copy_recipe, run_recipe


@pytest.fixture()
def recipe(tmp_path):
    """A copy of recipes/mini (scripts and confs only) so the test's data and exp stay in tmp."""
    return copy_recipe("mini", tmp_path)


def test_help_and_bad_option(recipe):
    out = run_recipe(recipe, "--help").stdout
    for name in ("synth", "prepare", "shards", "tokenizer", "train", "average", "decode", "report"):
        assert name in out
    bad = run_recipe(recipe, "--no-such-option", "1", check=False)
    assert bad.returncode != 0 and "unknown option --no-such-option" in bad.stderr


def test_stages_end_to_end_and_rerun_skips(recipe):
    opts = [
        "--num-train",
        "24",
        "--num-dev",
        "6",
        "--num-test",
        "6",
        "--exp",
        "exp/toy",
        "--train-opts",
        "max_steps=6 checkpoint_every=3 model.encoder.depth=1 model.encoder.embed_dim=32 "
        "model.encoder.num_heads=2 progress=false data.num_workers=0",
    ]
    first = run_recipe(recipe, *opts)
    report = first.stdout
    assert "test (greedy): %WER" in report and "%CER" in report
    done = sorted(p.name for p in (recipe / "exp/toy/.done").iterdir())
    assert len(done) >= 7 and all(n.endswith(".done") for n in done)
    assert (recipe / "exp/toy/model/model.safetensors").exists()
    assert (recipe / "exp/toy/decode_test_greedy/wer.txt").exists()

    again = run_recipe(recipe, *opts, "--stop-stage", "6")
    assert again.stderr.count("skipping") >= 7 and "stage 4 (train): start" not in again.stderr

    forced = run_recipe(recipe, *opts, "--stage", "3", "--stop-stage", "3", "--force")
    assert "stage 3 (tokenizer): start" in forced.stderr and "stage 2" not in forced.stderr
