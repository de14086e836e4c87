"""Classification heads beside CTC: masked losses, mixup, balanced sampling, metrics, CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from astctc.config import load_config
from astctc.data.manifest import write_manifest
from astctc.data.shards import write_shards
from astctc.tokenizer import CharTokenizer
from astctc.train import TrainConfig, Trainer, checkpoints, load_checkpoint
from tests.conftest import tiny_train_config

WORDS = ["zero", "one", "two"]


def _rows(shared: Path, digits=(0, 1, 2), speakers=("george", "jackson"), takes=(0, 1)) -> list[dict]:
    rows = []
    for d in digits:
        for s in speakers:
            for t in takes:
                f = shared / "fsdd" / "recordings" / f"{d}_{s}_{t}.wav"
                rows.append(
                    {
                        "id": f"{d}_{s}_{t}",
                        "audio": str(f),
                        "duration": 0.5,
                        "text": WORDS[d],
                        "speaker": s,
                        "labels": {"digit": str(d)},
                    }
                )
    return rows


@pytest.fixture(scope="module")
def joint_corpus(tmp_path_factory, shared_data) -> dict:
    """24 FSDD clips: 8 with transcript and digit, 8 with the digit only, 8 with the transcript
    only, and a multi-label head "tags" on some: every combination a batch can carry."""
    root = tmp_path_factory.mktemp("joint")
    rows = _rows(shared_data, takes=(0, 1, 2, 3))
    for i, r in enumerate(rows):
        if i % 3 == 1:
            r["text"] = ""
        elif i % 3 == 2:
            r["labels"] = {}
        if i % 2 == 0 and r["labels"]:
            r["labels"]["tags"] = ["even"] + (["low"] if r["labels"]["digit"] == "0" else [])
    write_manifest(rows, root / "manifest.jsonl")
    write_shards(root / "manifest.jsonl", root / "shards", max_shard_count=8, progress=False)
    CharTokenizer.train(WORDS).save(root / "lang")
    (root / "digit.txt").write_text("0\n1\n2\n")
    return {"root": root, "shards": root / "shards", "lang": root / "lang", "rows": rows}


def _config(corpus: dict, exp: Path, **over) -> TrainConfig:
    """conftest's tiny model, one block, with a digit head and a multi-label tags head."""
    heads = {
        "digit": {"labels_file": str(corpus["root"] / "digit.txt")},
        "tags": {"classes": ["even", "low"], "multi_label": True},
    }
    sets = {
        "data.max_batch_seconds": 6,
        "model.encoder.depth": 1,
        "model.encoder.max_frames": 256,
        "model.classifiers": json.dumps(heads),
        "optim.warmup_steps": 1,
        "optim.schedule": "constant",
        **over,
    }
    return load_config(TrainConfig, None, tiny_train_config(corpus, exp, **sets))


def _batch(trainer: Trainer, corpus: dict, ids: list[str]) -> dict:
    """A collated batch of the given ids, through the training Featurizer (no augmentation)."""
    from astctc.data.pipeline import Featurizer, collate
    from astctc.data.shards import ShardDataset

    f = Featurizer(trainer.cfg.features, trainer.tokenizer, heads=trainer.cfg.model.classifiers)
    items = {s["id"]: s for s in ShardDataset(corpus["shards"], shuffle=False, transform=f)}
    return collate([items[i] for i in ids])


# ---- losses ---------------------------------------------------------------------------------


def test_missing_targets_add_no_loss_and_no_gradient(joint_corpus, tmp_path):
    from astctc.models.heads import CTCHead

    tr = Trainer(_config(joint_corpus, tmp_path / "exp"))
    rows = {r["id"]: r for r in joint_corpus["rows"]}
    # both targets / digit only (no text) / text only (no label at all)
    ids = ["0_george_0", "0_george_1", "0_george_2"]
    assert rows[ids[1]]["text"] == "" and rows[ids[2]]["labels"] == {}
    batch = _batch(tr, joint_corpus, ids)
    assert batch["label_mask"]["digit"].tolist() == [True, True, False]
    assert batch["target_lengths"].tolist()[1] == 0

    feats = batch["feats"].clone().requires_grad_(True)
    tr.model.eval()  # no dropout: the comparisons below are exact
    out = tr.model(feats, batch["lengths"])
    parts = tr.losses(out, batch)
    assert set(parts) == {"ctc", "digit", "tags"}
    # CTC over the transcribed samples only; the digit head over the labelled ones only
    keep = torch.tensor([True, False, True])
    ref_ctc = CTCHead.loss(
        out["log_probs"][keep], out["lengths"][keep], batch["targets"], batch["target_lengths"][keep]
    )
    assert torch.equal(parts["ctc"], ref_ctc)
    ref_digit = torch.nn.functional.cross_entropy(out["digit"][:2], torch.tensor([0, 0]))
    assert torch.allclose(parts["digit"], ref_digit)
    # ... so the sample without a transcript gets no gradient from CTC, and the one without a
    # label none from the classifier (each sample's encoder pass is independent)
    (g_ctc,) = torch.autograd.grad(parts["ctc"], feats, retain_graph=True)
    (g_digit,) = torch.autograd.grad(parts["digit"], feats, retain_graph=True)
    assert g_ctc[1].abs().max() == 0 and g_ctc[0].abs().max() > 0 and g_ctc[2].abs().max() > 0
    assert g_digit[2].abs().max() == 0 and g_digit[0].abs().max() > 0 and g_digit[1].abs().max() > 0

    # a batch in which no sample has the "tags" label: no tags loss, its head gets no gradient
    # and is not moved (AdamW would decay it even with a zero gradient)
    batch = _batch(tr, joint_corpus, ["1_george_1", "1_george_3"])  # both (no tags), text only
    assert not bool(batch["label_mask"].get("tags", torch.tensor([False])).any())
    parts = tr.losses(tr.model(batch["feats"], batch["lengths"]), batch)
    assert set(parts) == {"ctc", "digit"}
    tr.model.zero_grad(set_to_none=True)
    sum(parts.values()).backward()
    assert all(p.grad is None for p in tr.model.classifiers["tags"].parameters())
    assert all(p.grad is not None for p in tr.model.classifiers["digit"].parameters())
    tr.model.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in tr.model.classifiers["tags"].state_dict().items()}
    enc_before = tr.model.encoder.layernorm.weight.detach().clone()
    tr.model.train()
    tr.train_step(batch)
    for k, v in tr.model.classifiers["tags"].state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(tr.model.encoder.layernorm.weight, enc_before)


def test_loss_weights(joint_corpus, tmp_path):
    tr = Trainer(_config(joint_corpus, tmp_path / "exp", loss_weights=json.dumps({"ctc": 0.0, "digit": 2.0})))
    assert tr.loss_weight("ctc") == 0.0 and tr.loss_weight("digit") == 2.0 and tr.loss_weight("tags") == 1.0
    with pytest.raises(ValueError, match="loss_weights names no head"):
        Trainer(_config(joint_corpus, tmp_path / "exp2", loss_weights=json.dumps({"speaker": 1.0})))


def test_labels_in_batches(joint_corpus, tmp_path):
    from astctc.data.pipeline import Featurizer, label_target
    from astctc.models.heads import ClassifierConfig

    tr = Trainer(_config(joint_corpus, tmp_path / "exp"))
    assert tr.cfg.model.classifiers["digit"].classes == ["0", "1", "2"]  # from the labels file
    batch = _batch(tr, joint_corpus, ["0_george_0", "2_george_2", "0_george_2"])
    assert batch["labels"]["digit"].tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert batch["labels"]["tags"].tolist() == [[1, 1], [1, 0], [0, 0]]
    assert batch["label_mask"]["tags"].tolist() == [True, True, False]
    cfg = ClassifierConfig(classes=["a", "b"]).resolve("h")
    with pytest.raises(ValueError, match="'c' is not a class of head h"):
        label_target("c", cfg, "h", "utt1")
    with pytest.raises(ValueError, match="single-label"):
        label_target(["a", "b"], cfg, "h", "utt1")
    # a sample with neither a transcript nor a label is dropped, one with either is kept
    f = Featurizer(tr.cfg.features, tr.tokenizer, heads=tr.cfg.model.classifiers)
    wav = torch.randn(8000)
    assert f({"id": "x", "wav": wav, "text": "", "labels": {}}) is None
    assert f({"id": "x", "wav": wav, "text": "", "labels": {"digit": "1"}}) is not None
    assert f({"id": "x", "wav": wav, "text": "one", "labels": {}}) is not None


# ---- mixup ----------------------------------------------------------------------------------


def test_mixup_of_one_hot_labels_gives_the_mixed_target():
    from astctc.data.mixup import mix_targets
    from astctc.models.encoder import EncoderConfig
    from astctc.models.heads import ClassificationHead, ClassifierConfig

    a, b = torch.eye(5)[1], torch.eye(5)[3]
    mixed = mix_targets({"h": a, "only_a": a}, {"h": b}, 0.3)
    assert set(mixed) == {"h"}  # a head only one of the two has gets no target
    assert torch.allclose(mixed["h"], torch.tensor([0, 0.3, 0, 0.7, 0]))
    # the soft-target loss is the same mixture of the two hard-target losses
    head = ClassificationHead(ClassifierConfig(num_classes=5), EncoderConfig(embed_dim=8))
    logits = torch.randn(1, 5)
    want = 0.3 * head.loss(logits, torch.tensor([1])) + 0.7 * head.loss(logits, torch.tensor([3]))
    assert torch.allclose(head.loss(logits, mixed["h"][None]), want)


def test_mixup_batches(joint_corpus, tmp_path):
    """Items without a transcript are mixed (features and targets with the same lambda), items
    with one are not; the result depends only on (seed, epoch, ids)."""
    from astctc.data.mixup import Mixup, MixupConfig

    for level in ("fbank", "waveform"):
        tr = Trainer(_config(joint_corpus, tmp_path / level))
        from astctc.data.pipeline import Featurizer
        from astctc.data.shards import ShardDataset

        f = Featurizer(tr.cfg.features, tr.tokenizer, heads=tr.cfg.model.classifiers)
        mix = Mixup(MixupConfig(prob=1.0, alpha=1.0, level=level), f)
        items = list(ShardDataset(joint_corpus["shards"], shuffle=False, transform=f))
        out = mix(items)
        assert all("wav" not in it for it in out)
        n_mixed = 0
        for before, after in zip(items, out):
            if len(before["targets"]) > 0 or not before["labels"]:
                assert after is before or torch.equal(after["feats"], before["feats"])
                continue
            n_mixed += 1
            partner_id, lam = after["mixed"]
            partner = next(it for it in items if it["id"] == partner_id)
            assert partner_id != before["id"] and not len(partner["targets"])
            want = lam * before["labels"]["digit"] + (1 - lam) * partner["labels"]["digit"]
            assert torch.allclose(after["labels"]["digit"], want)
            if level == "fbank":
                T = before["feats"].shape[0]
                pf = partner["feats"][:T]
                pf = torch.cat([pf, pf.new_zeros(T - pf.shape[0], pf.shape[1])])
                assert torch.allclose(after["feats"], lam * before["feats"] + (1 - lam) * pf)
            else:
                assert after["feats"].shape == before["feats"].shape
                assert not torch.equal(after["feats"], before["feats"])
        assert n_mixed == 8
        again = mix(items)
        for x, y in zip(out, again):
            assert torch.equal(x["feats"], y["feats"])


def test_mixup_with_text_drops_the_transcript_of_a_mixed_item(joint_corpus, tmp_path):
    """with_text: transcribed items with a label are mixed too, and a mixed item keeps no CTC
    target (a transcript cannot be mixed); an item with a transcript and no label is untouched."""
    from astctc.data.mixup import Mixup, MixupConfig
    from astctc.data.pipeline import Featurizer, collate
    from astctc.data.shards import ShardDataset

    tr = Trainer(_config(joint_corpus, tmp_path))
    f = Featurizer(tr.cfg.features, tr.tokenizer, heads=tr.cfg.model.classifiers)
    items = list(ShardDataset(joint_corpus["shards"], shuffle=False, transform=f))
    out = Mixup(MixupConfig(prob=1.0, alpha=1.0, with_text=True), f)(items)
    mixed_text = 0
    for before, after in zip(items, out):
        if not before["labels"]:
            assert after is before
            continue
        partner_id, lam = after["mixed"]
        partner = next(it for it in items if it["id"] == partner_id)
        assert partner["labels"] and len(after["targets"]) == 0
        want = lam * before["labels"]["digit"] + (1 - lam) * partner["labels"]["digit"]
        assert torch.allclose(after["labels"]["digit"], want)
        mixed_text += len(before["targets"]) > 0
    assert mixed_text == 8
    batch = collate(out)
    assert int((batch["target_lengths"] > 0).sum()) == 8  # only the label-less transcribed items


# ---- balanced sampling ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def imbalanced_shards(tmp_path_factory):
    """55 tiny clips: 40 of class a, 10 of b, 5 of c (and 3 without a label), in 4 shards."""
    from astctc.audio import encode_flac

    root = tmp_path_factory.mktemp("imbalanced")
    rows = []
    g = torch.Generator().manual_seed(0)
    for n, (cls, count) in enumerate([("a", 40), ("b", 10), ("c", 5), (None, 3)]):
        for i in range(count):
            p = root / "audio" / f"{cls}{i}.flac"
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(encode_flac(0.1 * torch.randn(800, generator=g)))
            rows.append(
                {"id": f"{cls}{i}", "audio": str(p), "duration": 0.05, "text": "", "labels": {"k": cls} if cls else {}}
            )
    write_manifest(rows, root / "manifest.jsonl")
    write_shards(root / "manifest.jsonl", root / "shards", max_shard_count=15, progress=False)
    return root / "shards"


def test_balanced_sampling_frequencies(imbalanced_shards):
    from astctc.data.sampling import BalanceConfig, BalancedShardDataset, class_counts, repeat_factors

    counts = class_counts(imbalanced_shards, "k")
    assert counts == {"a": 40, "b": 10, "c": 5}
    r = repeat_factors(counts, 1.0)
    assert sum(counts[c] * r[c] for c in counts) == pytest.approx(55)  # epoch length kept
    assert counts["a"] * r["a"] == pytest.approx(counts["c"] * r["c"])  # classes equally often

    seen: Counter = Counter()
    sizes = []
    for epoch in range(30):
        ds = BalancedShardDataset(imbalanced_shards, BalanceConfig("k", 1.0), seed=3)
        ds.set_epoch(epoch)
        ids = [s["id"] for s in ds]
        sizes.append(len(ids))
        seen.update(i.rstrip("0123456789") for i in ids)
        if epoch == 0:
            again = BalancedShardDataset(imbalanced_shards, BalanceConfig("k", 1.0), seed=3)
            again.set_epoch(0)
            assert [s["id"] for s in again] == ids  # deterministic: a resumed run replays it
            # the rank split is an exact partition of the expanded stream
            parts = []
            for rank in (0, 1):
                d = BalancedShardDataset(imbalanced_shards, BalanceConfig("k", 1.0), seed=3, rank=rank, world_size=2)
                d.set_epoch(0)
                parts += [s["id"] for s in d]
            assert Counter(parts) == Counter(ids)
    total = sum(seen[c] for c in "abc")
    for c in "abc":  # unbalanced: a 73%, c 9%; balanced: a third each
        assert abs(seen[c] / total - 1 / 3) < 0.05, (c, seen)
    assert seen["None"] == 3 * 30  # unlabelled samples keep factor 1
    assert abs(np.mean(sizes) - 58) < 3  # 55 labelled + 3 others

    half = repeat_factors(counts, 0.5)  # square-root balancing sits in between
    assert counts["a"] * half["a"] > counts["c"] * half["c"] > counts["c"]


def test_balanced_copies_are_augmented_differently(imbalanced_shards):
    from astctc.data.pipeline import Featurizer
    from astctc.data.sampling import BalanceConfig, BalancedShardDataset
    from astctc.features import FeatureConfig, SpecAugmentConfig

    f = Featurizer(FeatureConfig(), None, SpecAugmentConfig(freq_width=40), seed=0)
    ds = BalancedShardDataset(imbalanced_shards, BalanceConfig("k", 1.0), seed=0, transform=f)
    items: dict[str, list] = {}
    for it in ds:
        items.setdefault(it["id"], []).append(it["feats"])
    c_copies = [v for k, v in items.items() if k.startswith("c") and len(v) > 1]
    assert c_copies and all(not torch.equal(v[0], v[1]) for v in c_copies)


# ---- metrics --------------------------------------------------------------------------------


def test_map_equals_sklearn_macro_average_precision():
    from sklearn.metrics import average_precision_score

    from astctc.metrics import mean_average_precision

    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]])
    s = np.array(
        [[0.9, 0.2, 0.4], [0.8, 0.7, 0.4], [0.3, 0.7, 0.1], [0.3, 0.1, 0.9], [0.55, 0.5, 0.2], [0.1, 0.6, 0.4]]
    )  # ties in every column
    want = average_precision_score(y, s, average="macro")
    assert mean_average_precision(y, s) == pytest.approx(want, abs=1e-12)
    rng = np.random.default_rng(0)
    y, s = rng.random((50, 7)) < 0.3, np.round(rng.random((50, 7)), 1)
    assert mean_average_precision(y, s) == pytest.approx(average_precision_score(y, s, average="macro"), abs=1e-12)


def test_accuracy_and_macro_f1_equal_sklearn():
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.metrics import confusion_matrix as sk_cm

    from astctc.metrics import accuracy, confusion_matrix, macro_f1

    rng = np.random.default_rng(1)
    ref = rng.integers(0, 6, 80)
    hyp = np.where(rng.random(80) < 0.6, ref, rng.integers(0, 7, 80))  # class 6 only predicted
    assert accuracy(ref, hyp) == pytest.approx(accuracy_score(ref, hyp))
    assert macro_f1(ref, hyp, 8) == pytest.approx(f1_score(ref, hyp, average="macro"))
    assert (confusion_matrix(ref, hyp, 7) == sk_cm(ref, hyp, labels=range(7))).all()


# ---- training, evaluate and classify CLI ----------------------------------------------------


def test_classifier_only_training_evaluate_and_classify_cli(joint_corpus, tmp_path, capsys):
    """A model with no CTC head (no tokenizer) trains, averages, and its heads are scored;
    the scores equal a direct computation from the model's outputs."""
    from astctc.classify import Classifier
    from astctc.cli import main
    from astctc.train import average_checkpoints

    exp = tmp_path / "exp"
    cfg = _config(
        joint_corpus,
        exp,
        max_steps=4,
        checkpoint_every=2,
        **{"model.ctc": "null", "data.tokenizer": "", "data.mixup.prob": 0.5, "data.balance.head": "digit"},
    )
    summary = Trainer(cfg).run()
    assert "acc_digit" in summary and "map_tags" in summary and "wer" not in summary
    model = average_checkpoints(exp, last=2, out_dir=tmp_path / "model")
    assert not (model / "chars.txt").exists()

    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(model), "--data", str(joint_corpus["shards"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    scores = json.loads((out / "scores.json").read_text())
    for name in ("digit.txt", "digit_confusion.png", "digit_per_utt.tsv", "tags.txt"):
        assert (out / name).exists(), name
    assert "confusion matrix" in (out / "digit.txt").read_text()

    labelled = [r for r in joint_corpus["rows"] if "digit" in r["labels"]]
    clf = Classifier(model, head="digit")
    probs = clf.probabilities([r["audio"] for r in labelled])
    want = np.mean([clf.classes[int(p.argmax())] == r["labels"]["digit"] for p, r in zip(probs, labelled)])
    assert scores["digit"]["count"] == len(labelled) == 16
    assert scores["digit"]["accuracy"] == pytest.approx(100 * want)
    assert f"digit: accuracy {scores['digit']['accuracy']:.2f}%" in printed
    assert scores["tags"]["type"] == "multi-label" and 0 <= scores["tags"]["mAP"] <= 100

    f = labelled[0]["audio"]
    assert main(["classify", f, "--model", str(model), "--head", "digit", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.split("\n")
    top = [line.split("\t") for line in lines if line]
    assert [t[0] for t in top] == ["1", "2"]
    p = probs[0].sort(descending=True)
    assert top[0][1] == clf.classes[int(p.indices[0])] and float(top[0][2]) == pytest.approx(
        float(p.values[0]), abs=1e-4
    )
    assert main(["classify", f, "--model", str(model)]) == 1  # two heads: must choose
    assert "choose one" in capsys.readouterr().err

    # a set with no "tags" label anywhere (as a speaker head meets a test set of unseen speakers):
    # the labelled heads are scored, that one is left out; asking for it alone is an error
    untagged = [r for r in joint_corpus["rows"] if r["labels"] and "tags" not in r["labels"]]
    write_manifest(untagged, tmp_path / "untagged" / "manifest.jsonl")
    write_shards(tmp_path / "untagged" / "manifest.jsonl", tmp_path / "untagged" / "shards", progress=False)
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model),
                "--data",
                str(tmp_path / "untagged" / "shards"),
                "--out",
                str(tmp_path / "eval2"),
            ]
        )
        == 0
    )
    assert set(json.loads((tmp_path / "eval2" / "scores.json").read_text())) == {"digit"}
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model),
                "--head",
                "tags",
                "--data",
                str(tmp_path / "untagged" / "shards"),
                "--out",
                str(tmp_path / "eval3"),
            ]
        )
        == 1
    )
    assert "no sample has a label for head tags" in capsys.readouterr().err


def test_joint_training_resumes_exactly(joint_corpus, tmp_path):
    """Joint CTC + heads, with mixup and balanced sampling on: stopping at a checkpoint and
    resuming reaches the parameters of a straight run (the constant schedule makes the two
    runs' learning rates independent of max_steps)."""
    over = {
        "data.mixup.prob": 1.0,
        "data.balance.head": "digit",
        "data.max_batch_seconds": 3,
        "checkpoint_every": 100,
        "validate": False,
    }
    straight = tmp_path / "straight"
    Trainer(_config(joint_corpus, straight, max_steps=6, **over)).run()
    split = tmp_path / "split"
    Trainer(_config(joint_corpus, split, max_steps=4, **over)).run()
    assert load_checkpoint(checkpoints(split)[-1])["step"] == 4
    Trainer(_config(joint_corpus, split, max_steps=6, **over)).run()
    a, b = (load_checkpoint(checkpoints(d)[-1]) for d in (straight, split))
    assert a["step"] == b["step"] == 6 and a["epoch"] == b["epoch"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_labels_command_copies_a_field_and_writes_the_class_list(tmp_path, capsys):
    """The FLEURS language-ID hook: `language` -> labels.lang, class list for `labels_file:`."""
    from astctc.cli import main
    from astctc.data.manifest import read_manifest

    for split, langs in (("train", ["fr_fr", "en_us", "en_us"]), ("dev", ["de_de", None])):
        write_manifest(
            [
                {"id": f"{split}{i}", "audio": f"{i}.wav", "duration": 1.0, "text": "x", "language": lang}
                for i, lang in enumerate(langs)
            ],
            tmp_path / split / "manifest.jsonl",
        )
    ms = [str(tmp_path / s / "manifest.jsonl") for s in ("train", "dev")]
    out = tmp_path / "labels" / "lang.txt"
    assert (
        main(["labels", "--head", "lang", "--from-field", "language", "--manifest", *ms, "--labels-file", str(out)])
        == 0
    )
    assert out.read_text().split() == ["de_de", "en_us", "fr_fr"]
    rows = read_manifest(ms[0]) + read_manifest(ms[1])
    assert [r["labels"].get("lang") for r in rows] == ["fr_fr", "en_us", "en_us", "de_de", None]
    assert "lang: 3 classes" in capsys.readouterr().out
    from astctc.models.heads import ClassifierConfig

    assert ClassifierConfig(labels_file=str(out)).resolve("lang").num_classes == 3


def test_speechcommands_split_rule_on_the_official_test_speakers(shared_data):
    """The shared subset is the official test set: the dataset's own which_set (salt "") puts
    every one of its speakers in 'test', which checks our copy of the rule; the salted default
    splits the same speakers about 80/10/10, whole speakers only."""
    from collections import Counter

    from astctc.corpora.speechcommands import speaker_of, which_set

    speakers = {speaker_of(p) for p in (shared_data / "speech_commands_v2_test12").rglob("*.flac")} - {None}
    assert len(speakers) > 100
    assert {which_set(s, 10, 10, salt="") for s in speakers} == {"test"}
    parts = Counter(which_set(s, 10, 10) for s in speakers)
    assert parts["train"] > 0.7 * len(speakers) and min(parts["dev"], parts["test"]) > 0.05 * len(speakers)
