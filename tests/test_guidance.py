"""Guided decoding: which words the ImageNet guide forces, words the decoder never saw, and the
constraints users give, on hand-built classifiers and decoders with known answers."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from captioner.decoding import Constraint, beam_search
from captioner.decoding.constraints import parse_alternatives
from captioner.decoding.articles import indefinite_article
from captioner.decoding.lexicon import Lexicon
from captioner.data.vocab import Vocabulary
from captioner.errors import ArgumentError
from captioner.guidance import GuidanceError, ImageNetGuide, choose_proxies, load_imagenet_names
from helpers import END, START, MarkovStepper, markov_table

NAMES = load_imagenet_names()
LABEL = {label: i for i, label in reversed(list(enumerate(NAMES.labels)))}


def stub_encoder(head=None, weights="DEFAULT"):
    """An encoder whose features are the classifier's logits (identity head)."""
    return SimpleNamespace(head=head if head is not None else nn.Identity(), categories=list(NAMES.labels),
                           spec=SimpleNamespace(backbone="stub", weights=weights))


def logits_for(spread: dict[str, float]) -> torch.Tensor:
    """Logits whose softmax gives each named class its probability; what is left goes to "chiton",
    the one class with no name in captions, and 1e-9 to every other class."""
    probs = torch.full((1000,), 1e-9, dtype=torch.float64)
    for label, p in spread.items():
        probs[LABEL[label]] = p
    probs[LABEL["chiton"]] = 1.0 - probs.sum() + probs[LABEL["chiton"]]
    return probs.log().float()


def chosen(spreads, threshold=0.5):
    guide = ImageNetGuide(stub_encoder())
    features = torch.stack([logits_for(s) for s in spreads])
    return [[(f.words[0], round(f.probability, 3)) for f in image] for image in guide.choose(features, threshold)]


def test_classes_of_one_concept_add_up():
    # no cat class reaches 0.5, but they are all cats: 0.3 + 0.3 + 0.2
    assert chosen([{"tabby": 0.3, "tiger cat": 0.3, "Egyptian cat": 0.2}]) == [[("cat", 0.8)]]
    assert chosen([{"espresso": 0.9}]) == [[("coffee", 0.9)]]


def test_disagreement_backs_off_to_the_shared_parent_but_never_to_a_generic_one():
    # owl and eagle: neither is sure, "bird" is
    assert chosen([{"great grey owl": 0.3, "bald eagle": 0.3}]) == [[("bird", 0.6)]]
    # dog and wolf share only "animal", which is never forced
    assert chosen([{"golden retriever": 0.3, "timber wolf": 0.3}]) == [[]]
    # the specific name wins when it alone is sure enough
    assert chosen([{"great grey owl": 0.7}]) == [[("owl", 0.7)]]


def test_two_unrelated_concepts_below_half_and_the_threshold():
    # equally sure and equally specific (depth 2: dog < animal, coffee < drink): the likelier one first
    assert chosen([{"espresso": 0.38, "golden retriever": 0.42}], threshold=0.35) == [[("dog", 0.42), ("coffee", 0.38)]]
    assert chosen([{"espresso": 0.4}], threshold=0.5) == [[]]
    with pytest.raises(GuidanceError, match="1.5"):
        ImageNetGuide(stub_encoder()).choose(logits_for({})[None], 1.5)


def test_the_surest_concept_wins_across_unrelated_branches():
    """Depth decides only between a concept and its ancestors: the espresso at 0.60 beats a
    deeper but less likely ladybug and shipwreck (0.15 each) at threshold 0.1, and at threshold
    0 the image is not forced to whatever tiny class is deepest."""
    spread = {"espresso": 0.60, "ladybug": 0.15, "wreck": 0.15}
    assert chosen([spread], threshold=0.1)[0][0] == ("coffee", 0.6)
    assert chosen([spread], threshold=0.0)[0][0] == ("coffee", 0.6)
    first, second = chosen([{"espresso": 0.9}], threshold=0.0)[0]
    assert first == ("coffee", 0.9) and second[1] < 1e-6  # anything else is a sum of 1e-9s
    # within one branch the specific concept still wins over its surer ancestor
    assert chosen([{"great grey owl": 0.7, "bald eagle": 0.2}], threshold=0.5) == [[("owl", 0.7)]]


def test_a_concept_exactly_at_the_threshold_is_forced():
    guide = ImageNetGuide(stub_encoder())
    features = logits_for({"espresso": 0.6})[None]
    mass = float(guide.probabilities(features) @ guide.membership[:, guide.concepts.index("coffee")])
    assert [f.words[0] for f in guide.choose(features, mass)[0]] == ["coffee"]
    assert guide.choose(features, math.nextafter(mass, 1.0))[0] == []


def test_pictures_of_people_keep_the_decoder_caption():
    # a suit is evidence of a person: no "person" is invented, and the coffee is not forced either
    assert chosen([{"suit": 0.3, "espresso": 0.6}]) == [[]]
    assert chosen([{"suit": 0.1, "espresso": 0.8}]) == [[("coffee", 0.8)]]


def test_an_encoder_without_an_imagenet_head_is_refused_in_one_line():
    with pytest.raises(GuidanceError, match="needs an encoder with a trained ImageNet classification head") as error:
        ImageNetGuide(stub_encoder(weights=None))
    assert "\n" not in str(error.value)
    with pytest.raises(GuidanceError, match="stub"):
        ImageNetGuide(SimpleNamespace(head=None, categories=None, spec=SimpleNamespace(backbone="stub", weights=None)))


# -- constraints given by users -------------------------------------------------------------------------------
def test_parse_alternatives():
    assert parse_alternatives("Cat|kitten") == ["cat", "kitten"]
    assert parse_alternatives(" polar   bear ") == ["polar bear"]
    for bad in ("", "   ", "|", "123", "cat|42"):
        with pytest.raises(ArgumentError, match="--include"):
            parse_alternatives(bad, "--include")


# -- words the decoder never saw ---------------------------------------------------------------------------------
VOCAB = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "on", "grass", "cat", "bear"])
A_, DOG, ON, GRASS, CAT, BEAR = 4, 5, 6, 7, 8, 9
# "a dog on grass" is the caption; after "a", dog 0.7, cat 0.3
TABLE = markov_table({START: {A_: 1.0}, A_: {DOG: 0.7, CAT: 0.3}, DOG: {ON: 0.6, END: 0.4}, CAT: {END: 1.0},
                      ON: {GRASS: 1.0}, GRASS: {END: 1.0}, BEAR: {END: 1.0}}, vocab_size=10)


def test_a_new_word_is_decoded_as_a_copy_of_its_proxy():
    lexicon = Lexicon(VOCAB, {"kangaroo": DOG, "elephant": DOG})
    stepper = lexicon.wrap(MarkovStepper(TABLE))
    kangaroo = lexicon.phrase_ids("kangaroo")
    (h,) = beam_search(stepper, START, END, beam_size=3, length_penalty=0.0,
                       constraints=[[Constraint((kangaroo,))]], phrase_only_from=lexicon.phrase_only_from)[0]
    # the caption goes on as after "dog", with the same probability
    assert lexicon.to_text(h.tokens) == "a kangaroo on grass" and h.unmet == 0
    assert h.log_prob == pytest.approx(math.log(0.7 * 0.6), abs=1e-5)
    (h,) = beam_search(stepper, START, END, beam_size=3, length_penalty=1.0,
                       constraints=[[Constraint((lexicon.phrase_ids("elephant"),))]],
                       phrase_only_from=lexicon.phrase_only_from)[0]
    assert lexicon.to_text(h.tokens) == "an elephant on grass"  # the article agrees with the new word
    # without a constraint naming them, the added words never appear
    (free,) = beam_search(stepper, START, END, beam_size=3, length_penalty=0.0,
                          phrase_only_from=lexicon.phrase_only_from)[0]
    assert lexicon.to_text(free.tokens) == "a dog on grass"


def test_lexicon_refuses_what_it_cannot_decode():
    with pytest.raises(ArgumentError, match="already in the vocabulary"):
        Lexicon(VOCAB, {"dog": CAT})
    with pytest.raises(ArgumentError, match="ordinary word"):
        Lexicon(VOCAB, {"kangaroo": VOCAB.unk_id})
    with pytest.raises(ArgumentError, match="no proxy"):
        Lexicon(VOCAB).phrase_ids("kangaroo")
    assert Lexicon(VOCAB, {"kangaroo": DOG}).fed_ids(torch.tensor([1, 10, 2])).tolist() == [1, DOG, 2]


def test_indefinite_article():
    assert [indefinite_article(w) for w in ("elephant", "kangaroo", "hour", "unicorn", "owl")] == \
        ["an", "a", "an", "a", "an"]


def test_proxies_head_noun_visual_similarity_and_fallback():
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "cat", "bear", "cats"])
    # a classifier whose kangaroo (wallaby) row equals the cat rows: kangaroos look like cats to it
    weight = torch.randn(1000, 16, generator=torch.Generator().manual_seed(0))
    cat_row = weight[LABEL["tabby"]]
    for label, concept in zip(NAMES.labels, NAMES.class_concepts):
        if concept == "cat":
            weight[LABEL[label]] = cat_row
    weight[LABEL["wallaby"]] = cat_row
    head = nn.Linear(16, 1000)
    head.weight.data = weight
    proxies = choose_proxies(["polar bear", "kangaroo", "kangaroos", "dog", "zorblax"], vocab, stub_encoder(head))
    assert proxies["polar bear"] == vocab.stoi["bear"]          # head noun
    assert proxies["kangaroo"] == vocab.stoi["cat"]             # the most similar known concept
    assert proxies["kangaroos"] == vocab.stoi["cats"]           # ... in the plural
    assert "dog" not in proxies                                 # known words need none
    assert proxies["zorblax"] == vocab.stoi["dog"]              # the most frequent known concept
