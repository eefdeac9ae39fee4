"""Tokenisation and the vocabulary."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from captioner.data.vocab import SPECIALS, Vocabulary, detokenize, tokenize


def test_tokenize_known_answers():
    assert tokenize("A Dog's ball.") == ["a", "dog", "'s", "ball", "."]
    assert tokenize("  Two cats, sleeping!") == ["two", "cats", ",", "sleeping", "!"]
    assert tokenize("") == []


def test_detokenize_undoes_tokenize_on_plain_text():
    assert detokenize(tokenize("a dog's ball, on the grass.")) == "a dog's ball, on the grass."


def test_build_orders_by_count_then_word_and_applies_min_count():
    vocab = Vocabulary.build(["a dog", "a cat", "a dog runs", "zebra"], min_count=2)
    assert vocab.itos == [*SPECIALS, "a", "dog"]
    assert Vocabulary.build(["b a", "a"]).itos == [*SPECIALS, "a", "b"]


def test_encode_decode_and_unknown_words():
    vocab = Vocabulary.build(["a dog on the grass"])
    ids = vocab.encode("A dog on the moon")
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert ids[-2] == vocab.unk_id
    assert vocab.decode(ids) == ["a", "dog", "on", "the", "<unk>"]
    # decoding stops at <end> and skips <pad>/<start>
    assert vocab.decode([vocab.start_id, ids[1], vocab.pad_id, vocab.end_id, ids[2]]) == ["a"]
    assert vocab.to_text(vocab.encode("a dog on the grass")) == "a dog on the grass"


def test_specials_have_fixed_ids():
    vocab = Vocabulary.build(["x"])
    assert [vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id] == [0, 1, 2, 3]
    assert vocab.itos[:4] == list(SPECIALS)


def test_json_roundtrip_is_plain_data():
    vocab = Vocabulary.build(["a red car", "a blue car"], min_count=1)
    text = json.dumps(vocab.to_dict())
    assert Vocabulary.from_dict(json.loads(text)) == vocab


def test_invalid_vocabularies_are_refused():
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary([*SPECIALS, "a", "a"])
    with pytest.raises(ValueError, match="tokenizer"):
        Vocabulary([*SPECIALS], tokenizer="spacy")


@given(st.lists(st.sampled_from(["a", "dog", "cat", "on", "the", "mat", "red"]), min_size=1, max_size=12))
def test_encode_decode_roundtrip_property(words):
    vocab = Vocabulary.build([" ".join(words)])
    assert vocab.decode(vocab.encode(words)) == words
