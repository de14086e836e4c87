import pytest

from astctc.text import normalize
from astctc.tokenizer import CharTokenizer, SentencePieceTokenizer, load_tokenizer


def test_normalize():
    assert normalize("Hello,   World! It's \u201cfine\u201d.") == "hello world it's fine"
    assert normalize("'quoted' don't -- rock'n'roll") == "quoted don't rock'n'roll"
    assert normalize("Ça va? Ünïcode") == "ça va ünïcode"
    assert normalize("  ...  ") == ""


def test_char_tokenizer_round_trip(tmp_path):
    texts = ["hello world", "don't stop"]
    tok = CharTokenizer.train(texts)
    assert tok.blank == 0 and tok.symbols[0] == "<blank>"
    ids = tok.encode("hello world")
    assert 0 not in ids
    assert tok.decode(ids) == "hello world"
    assert tok.encode("z")[0] == 1  # unknown character -> <unk>
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.symbols == tok.symbols and again.labels()[0] == ""


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_sentencepiece_tokenizer(tmp_path, kind):
    texts = [
        f"the {w} sat on the mat near {v}" for w in ["cat", "dog", "bird", "fish"] for v in ["home", "work", "school"]
    ] * 5
    tok = SentencePieceTokenizer.train(texts, vocab_size=40, model_type=kind)
    ids = tok.encode("the cat sat on the mat")
    assert min(ids) >= 1 and tok.blank == 0
    assert tok.decode(ids) == "the cat sat on the mat"
    assert len(tok.labels()) == tok.vocab_size and tok.labels()[0] == ""
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode("the dog") == tok.encode("the dog")


def test_missing_tokenizer(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(tmp_path)
