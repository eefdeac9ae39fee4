"""The printed caption is the one scored: every caption's log-probability is that of its own text
(Captioner.score), a word the vocabulary knows is decoded as itself, a synonym it lacks reads as a
word of its own concept, and "a"/"an" agree with the next word in every caption."""

import math

import pytest
import torch

from captioner import Captioner
from captioner.data.vocab import Vocabulary
from captioner.decoding import DecodingSettings, decode
from captioner.decoding.articles import indefinite_article
from captioner.guidance import choose_proxies, load_imagenet_names
from helpers import DEVICES, MarkovStepper, markov_table

EXAMPLES = ("astronaut", "cat", "clock", "coffee", "coins", "hubble", "retina", "rocket")


@pytest.fixture(scope="module", params=DEVICES)
def bundled(request):
    return Captioner.from_checkpoint(device=request.param)


def agree(text: str) -> bool:
    words = text.split()
    return all(a == indefinite_article(w) for a, w in zip(words, words[1:]) if a in ("a", "an") and w[:1].isalpha())


@pytest.mark.parametrize("options", [dict(guide="imagenet", num_captions=2), dict(guide="none", method="greedy"),
                                     dict(guide="imagenet", guide_threshold=0.1, num_captions=3, beam_size=5),
                                     dict(guide="none", include=["owl", "kitty|dog"])])
def test_every_caption_reports_the_log_prob_of_its_own_text(bundled, examples_dir, options):
    """Both sides sum at most 21 float32 log-probabilities (each under 30 in size) from two
    implementations of the same LSTM step that agree to about 1e-6 per step: 1e-4 is ample."""
    paths = [str(examples_dir / f"{name}.jpg") for name in EXAMPLES]
    results = bundled.caption(paths, **options)
    captions = [(r.source, c) for r in results for c in r.captions]
    scores = bundled.score([p for p, _ in captions], [c.text for _, c in captions])
    for (path, caption), score in zip(captions, scores):
        assert caption.log_prob == pytest.approx(score, abs=1e-4), (path, caption.text)
        assert agree(caption.text), caption.text


def test_score_reads_a_caption_as_the_model_would_write_it(bundled, examples_dir):
    path = str(examples_dir / "cat.jpg")
    (result,) = bundled.caption(path, guide="none", method="greedy")
    (score,) = bundled.score(path, result.text)
    assert score == pytest.approx(result.captions[0].log_prob, abs=1e-4)
    worse = bundled.score([path, path], [result.text + " " + result.text, "of of of"])
    assert all(s < score for s in worse) and all(math.isfinite(s) for s in worse)
    with pytest.raises(ValueError, match="2 captions for 1 images"):
        bundled.score(path, ["a cat", "a dog"])


SYNONYMS = {"kitty": "cat", "doggy": "dog", "cockerel": "rooster", "hog": "pig", "swine": "pig",
            "aeroplane": "plane", "missile": "rocket", "sofa": "couch", "tub": "bathtub",
            "cab": "taxi", "mic": "microphone"}


def test_a_synonym_reads_as_a_word_of_its_own_concept_or_the_nearest_above(bundled):
    names, vocab = load_imagenet_names(), bundled.vocab
    proxies = choose_proxies(list(SYNONYMS), vocab, bundled.model.encoder)
    own = 0
    for synonym, concept in SYNONYMS.items():
        assert synonym not in vocab and names.concept_of_word(synonym).name == concept
        word = vocab.itos[proxies[synonym]]
        if any(w in vocab for w in names.concepts[concept].words):  # its own concept's word, when there is one
            assert names.concept_of_word(word).name == concept, (synonym, word)
            own += 1
        else:  # else the nearest concept above that has one
            above = next(a for a in names.ancestors(concept)[1:] if any(w in vocab for w in names.concepts[a].words))
            assert names.concept_of_word(word).name == above, (synonym, word)
    assert own >= len(SYNONYMS) - 2  # the test is mostly about words of their own concept
    # concepts the vocabulary has no word for read as the nearest concept above them that it has
    novel = [c for c in names.concepts.values()  # one-word names (a phrase reads as its head noun)
             if " " not in c.name and not any(w in vocab for w in c.words) and any(
                 w in vocab for a in names.ancestors(c.name)[1:] for w in names.concepts[a].words)]
    assert len(novel) > 10
    proxies = choose_proxies([c.name for c in novel], vocab, bundled.model.encoder)
    for concept in novel:
        word = vocab.itos[proxies[concept.name]]
        assert names.concept_of_word(word).name in names.ancestors(concept.name)[1:], (concept.name, word)


def test_a_known_word_is_decoded_as_itself(bundled, examples_dir):
    """The guide forces cat|kitten|kitty on the cat photo; "kitty" is not in the vocabulary and would
    read as "cat", so the caption says one of the known words, scored as itself."""
    (result,) = bundled.caption(str(examples_dir / "cat.jpg"), guide="imagenet")
    assert result.forced[0].words == ("cat", "kitten", "kitty")
    words = set(result.text.split())
    assert words & {"cat", "kitten"} and "kitty" not in words


# "a" is likelier than "an"; after "a" the model prefers "owl", after "an" it is unsure.
VOCAB = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "an", "owl", "dog", "hour", "unicorn"])
A, AN, OWL, DOG, HOUR, UNICORN = 4, 5, 6, 7, 8, 9
ARTICLES = markov_table({1: {A: 0.9, AN: 0.1}, A: {OWL: 0.7, DOG: 0.2, HOUR: 0.1}, AN: {OWL: 0.5, UNICORN: 0.5},
                         OWL: {2: 1.0}, DOG: {2: 1.0}, HOUR: {2: 1.0}, UNICORN: {2: 1.0}}, vocab_size=10)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_articles_agree_with_the_next_word_while_decoding(method):
    """Greedy would write "a owl"; with the rule it writes "a dog" (0.9 x 0.2), the likeliest
    agreeing caption, which beam search finds too; the only other is "an owl" (0.1 x 0.5)."""
    settings = DecodingSettings(method=method, beam_size=4, length_penalty=0.0)
    (hyps,) = decode(MarkovStepper(ARTICLES), VOCAB, settings)
    assert VOCAB.to_text(hyps[0].tokens) == "a dog"
    assert hyps[0].log_prob == pytest.approx(math.log(0.9 * 0.2), abs=1e-5)
    settings = DecodingSettings(method="beam", beam_size=8, num_captions=4, length_penalty=0.0)
    texts = [VOCAB.to_text(h.tokens) for h in decode(MarkovStepper(ARTICLES), VOCAB, settings)[0]]
    assert texts == ["a dog", "an owl"]  # "a owl", "a hour" and "an unicorn" are never candidates


def test_indefinite_article():
    cases = {"elephant": "an", "kangaroo": "a", "hour": "an", "honest": "an", "heir": "an", "unicorn": "a",
             "uniform": "a", "uninvited": "an", "umbrella": "an", "one": "a", "european": "a", "egg": "an",
             "otter": "an", "iguana": "an", "user": "a", "owl": "an", "hat": "a"}
    assert {w: indefinite_article(w) for w in cases} == cases


@pytest.mark.parametrize("rows_only", [True, False], ids=["rows-after-articles", "every-row"])
def test_the_article_rule_changes_only_the_rows_after_an_article(rows_only):
    from captioner.decoding.articles import agree_articles

    stepper = agree_articles(MarkovStepper(ARTICLES, rows=3), VOCAB, rows_only=rows_only)
    tokens = torch.tensor([OWL, A, AN])
    log_probs, _ = stepper.step(tokens, stepper.state)
    plain = torch.tensor(ARTICLES).log()[tokens].float()
    assert torch.equal(log_probs[0], plain[0])
    assert log_probs[1, OWL] == -math.inf and log_probs[1, DOG] == plain[1, DOG]
    assert log_probs[2, DOG] == -math.inf and log_probs[2, OWL] == plain[2, OWL]
