"""Greedy, beam search and sampling against hand-built decoders with known answers."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from captioner.decoding import beam_search, greedy, sample
from captioner.decoding import Constraint, Stepping
from captioner.decoding.search import CUDA_CHECK_EVERY
from captioner.models.stepping import LSTMStepper
from helpers import DEVICES, END, START, MarkovStepper, markov_table, random_decoder, sequence_log_prob

A, B, X, Y, Z, C = 3, 4, 5, 6, 7, 8

# Greedy takes A (0.6) then x (0.55): p = 0.33. The best sequence is B z: p = 0.4 * 0.9 = 0.36.
TRAP = markov_table({
    START: {A: 0.6, B: 0.4},
    A: {X: 0.55, Y: 0.45},
    B: {Z: 0.9, END: 0.1},
    X: {END: 1.0}, Y: {END: 1.0}, Z: {END: 1.0},
}, vocab_size=9)


def run(fn, table, batch=1, device="cpu", **kwargs):
    return fn(MarkovStepper(table, batch, device), START, END, **kwargs)


on_every_device = pytest.mark.parametrize("device", DEVICES)


@pytest.fixture(params=[Stepping(live_rows=True), Stepping(live_rows=False, check_every=CUDA_CHECK_EVERY)],
                ids=["live-rows", "all-rows"])
def stepping(request):
    """Both ways the searches step: only the rows still decoding (a CPU's default) or every row,
    checking every few steps (CUDA's), whatever the device."""
    return request.param


@on_every_device
def test_greedy_falls_into_the_trap(device, stepping):
    (h,) = run(greedy, TRAP, stepping=stepping, device=device)
    assert h.tokens == (A, X)
    assert h.log_prob == pytest.approx(math.log(0.33), abs=1e-5)


@on_every_device
def test_beam_search_finds_the_more_probable_sequence(device, stepping):
    (hyps,) = run(beam_search, TRAP, stepping=stepping, device=device, beam_size=2, num_return=2)
    assert hyps[0].tokens == (B, Z)
    assert hyps[0].log_prob == pytest.approx(math.log(0.36), abs=1e-5)
    assert hyps[1].tokens == (A, X)
    assert hyps[1].log_prob == pytest.approx(math.log(0.33), abs=1e-5)


def test_beam_size_one_is_greedy_on_the_trap():
    (hyps,) = run(beam_search, TRAP, beam_size=1)
    assert hyps[0].tokens == (A, X)


def all_sequences(table, max_length, vocab):
    """Every complete sequence of 1..max_length words, with its exact log-probability."""
    words = [w for w in range(vocab) if w not in (0, START, END)]
    for n in range(1, max_length + 1):
        for seq in itertools.product(words, repeat=n):
            yield seq, sequence_log_prob(table, seq)


@pytest.mark.parametrize("seed", range(5))
def test_wide_beam_finds_the_exact_optimum_found_by_enumeration(seed):
    torch.manual_seed(seed)
    vocab, max_length = 6, 3
    probs = torch.rand(vocab, vocab) ** 3 + 1e-3
    probs[:, 0] = 0.0
    probs[:, START] = 0.0
    table = (probs / probs.sum(1, keepdim=True)).tolist()
    truth = sorted(all_sequences(table, max_length, vocab), key=lambda s: s[1], reverse=True)
    width = len(truth)  # every sequence fits in the beam: the search is exhaustive
    (hyps,) = beam_search(MarkovStepper(table), START, END, beam_size=width, max_length=max_length,
                          num_return=5, banned=(0, START), length_penalty=0.0)
    for h, (seq, lp) in zip(hyps, truth[:5]):
        assert h.log_prob == pytest.approx(lp, abs=1e-4)
    assert hyps[0].tokens == truth[0][0]


@on_every_device
def test_length_penalty_changes_the_ranking_as_expected(device):
    # [A] has p = 0.52 (per token 0.52 ** 0.5); [A, B, C] has p = 0.456 (per token 0.456 ** 0.25).
    table = markov_table({
        START: {A: 1.0}, A: {END: 0.52, B: 0.48}, B: {C: 0.95, END: 0.05}, C: {END: 1.0},
    }, vocab_size=9)
    (plain,) = run(beam_search, table, device=device, beam_size=2, length_penalty=0.0)
    (normalised,) = run(beam_search, table, device=device, beam_size=2, length_penalty=1.0)
    assert plain[0].tokens == (A,)
    assert normalised[0].tokens == (A, B, C)
    assert normalised[0].score == pytest.approx(math.log(0.48 * 0.95) / 4, abs=1e-5)


@on_every_device
def test_no_end_within_max_length_still_returns_a_truncated_caption(device, stepping):
    # <end> has probability 0 everywhere: no search can ever choose it.
    never_ends = markov_table({START: {A: 0.7, B: 0.3}, A: {A: 0.9, B: 0.1}, B: {A: 1.0}}, vocab_size=9)
    g = run(greedy, never_ends, stepping=stepping, device=device, max_length=4)[0]
    beams = run(beam_search, never_ends, stepping=stepping, device=device, beam_size=3, max_length=4, num_return=3)[0]
    samples = run(sample, never_ends, device=device, max_length=4, num_samples=5)[0]
    assert g.tokens == (A, A, A, A) and g.truncated
    assert len(beams) == 3 and beams[0].tokens == (A, A, A, A)
    for h in [g, *beams, *samples]:
        assert len(h.tokens) == 4 and h.truncated and h.log_prob == -math.inf


@on_every_device
def test_truncated_caption_log_prob_includes_the_forced_end(device):
    rarely_ends = markov_table({START: {A: 0.99, END: 0.01}, A: {A: 0.99, END: 0.01}}, vocab_size=9)
    (h,) = run(greedy, rarely_ends, device=device, max_length=4)
    assert h.tokens == (A, A, A, A) and h.truncated
    assert h.log_prob == pytest.approx(4 * math.log(0.99) + math.log(0.01), abs=1e-4)
    # beam search prefers the shortest sequence here: every extra word costs log(0.99)
    (best,) = run(beam_search, rarely_ends, device=device, beam_size=3, max_length=4, length_penalty=0.0)[0]
    assert best.tokens == (A,) and not best.truncated


@on_every_device
def test_min_length_forbids_empty_captions(device, stepping):
    table = markov_table({START: {END: 0.9, A: 0.1}, A: {END: 1.0}}, vocab_size=9)
    assert run(greedy, table, stepping=stepping, device=device)[0].tokens == (A,)
    assert run(greedy, table, stepping=stepping, device=device, min_length=0)[0].tokens == ()


def test_banned_tokens_never_appear(stepping):
    (h,) = run(greedy, TRAP, stepping=stepping, banned=(A,))
    assert h.tokens == (B, Z)


@on_every_device
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 5), layers=st.integers(1, 2))
def test_beam_size_one_equals_greedy_on_random_lstms(device, seed, batch, layers):
    decoder = random_decoder(layers=layers, seed=seed).to(device)
    features = torch.randn(batch, 8, generator=torch.Generator().manual_seed(seed)).to(device)
    g = greedy(LSTMStepper(decoder, features), START, END, max_length=8)
    b = beam_search(LSTMStepper(decoder, features), START, END, beam_size=1, max_length=8)
    for gh, (bh,) in zip(g, b):
        assert gh.tokens == bh.tokens
        assert gh.log_prob == pytest.approx(bh.log_prob, abs=1e-4)


@on_every_device
@pytest.mark.parametrize("seed", range(4))
def test_batched_beam_equals_one_image_at_a_time(seed, device):
    decoder = random_decoder(seed=seed).to(device)
    features = torch.randn(5, 8, generator=torch.Generator().manual_seed(seed)).to(device)
    batched = beam_search(LSTMStepper(decoder, features), START, END, beam_size=4, num_return=3, length_penalty=0.7)
    for i in range(5):
        (single,) = beam_search(LSTMStepper(decoder, features[i:i + 1]), START, END, beam_size=4, num_return=3,
                                length_penalty=0.7)
        assert [h.tokens for h in single] == [h.tokens for h in batched[i]]


@on_every_device
@pytest.mark.parametrize("seed", range(3))
def test_reported_log_probs_are_those_of_the_returned_sequences(seed, device):
    decoder = random_decoder(seed=seed).to(device)
    features = torch.randn(3, 8, generator=torch.Generator().manual_seed(seed)).to(device)
    nbest = beam_search(LSTMStepper(decoder, features), START, END, beam_size=5, num_return=5, length_penalty=1.0)
    for i, hyps in enumerate(nbest):
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for h in hyps:
            captions = torch.tensor([[START, *h.tokens, END]], device=device)
            with torch.no_grad():
                logits = decoder(features[i:i + 1], captions, torch.tensor([captions.shape[1]]))
            lp = logits.log_softmax(-1)[0].gather(1, captions[0, 1:, None]).sum().item()
            assert h.log_prob == pytest.approx(lp, abs=1e-3)
            assert h.score == pytest.approx(h.log_prob / (len(h.tokens) + 1), abs=1e-4)


@on_every_device
def test_sampling_follows_the_model_distribution(device):
    n = 4000
    samples = run(sample, TRAP, device=device, num_samples=n, generator=torch.Generator().manual_seed(0))[0]
    freq_a = sum(h.tokens[0] == A for h in samples) / n
    freq_bz = sum(h.tokens == (B, Z) for h in samples) / n
    assert abs(freq_a - 0.6) < 0.03
    assert abs(freq_bz - 0.36) < 0.03
    for h in samples[:50]:
        assert h.log_prob == pytest.approx(sequence_log_prob(TRAP, h.tokens), abs=1e-4)


def test_sampling_with_top_k_one_or_low_temperature_is_greedy():
    decoder = random_decoder(seed=7)
    features = torch.randn(4, 8)
    g = [h.tokens for h in greedy(LSTMStepper(decoder, features), START, END)]
    top1 = [hs[0].tokens for hs in sample(LSTMStepper(decoder, features), START, END, top_k=1)]
    cold = [hs[0].tokens for hs in sample(LSTMStepper(decoder, features), START, END, temperature=1e-4)]
    assert top1 == g and cold == g


def test_sampling_is_reproducible_with_a_seeded_generator():
    decoder = random_decoder(seed=8)
    features = torch.randn(3, 8)
    a = sample(LSTMStepper(decoder, features), START, END, num_samples=4, generator=torch.Generator().manual_seed(1))
    b = sample(LSTMStepper(decoder, features), START, END, num_samples=4, generator=torch.Generator().manual_seed(1))
    assert [[h.tokens for h in hs] for hs in a] == [[h.tokens for h in hs] for hs in b]


@on_every_device
def test_an_empty_batch_gives_no_captions(device, stepping):
    decoder, features = random_decoder().to(device), torch.zeros(0, 8, device=device)
    assert greedy(LSTMStepper(decoder, features), START, END) == []
    assert beam_search(LSTMStepper(decoder, features), START, END, beam_size=3) == []
    assert beam_search(LSTMStepper(decoder, features), START, END, beam_size=2, constraints=[]) == []
    assert sample(LSTMStepper(decoder, features), START, END, num_samples=2) == []


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="num_return"):
        run(beam_search, TRAP, beam_size=2, num_return=3)
    with pytest.raises(ValueError, match="temperature"):
        run(sample, TRAP, temperature=0)
    with pytest.raises(ValueError, match="max_length"):
        run(greedy, TRAP, max_length=0)


class Counting(MarkovStepper):
    """A Markov stepper with one table per image (``images[i]`` picks image i's) that records
    how many rows each step is asked for."""

    def __init__(self, tables, images):
        self.log_tables = torch.tensor(tables, dtype=torch.float64).log().float()
        self.rows, self.device, self.state = len(images), torch.device("cpu"), torch.tensor(images)
        self.asked = []

    def step(self, tokens, state):
        self.asked.append(tokens.shape[0])
        return self.log_tables[state, tokens], state


def test_finished_captions_leave_the_batch_when_stepping_live_rows():
    """Image 0 says "A", image 1 "B X Y": greedy steps both rows twice (A; <end> and X), then
    only image 1's (Y; <end>). Beam 2 on TRAP steps the one start row, then two rows twice.
    Stepping every row, greedy steps both rows until both are done, checking every 4 steps."""
    short = markov_table({START: {A: 1.0}, A: {END: 1.0}}, vocab_size=9)
    long = markov_table({START: {B: 1.0}, B: {X: 1.0}, X: {Y: 1.0}, Y: {END: 1.0}}, vocab_size=9)
    live, every = Stepping(live_rows=True), Stepping(live_rows=False, check_every=4)
    stepper = Counting([short, long], [0, 1])
    hyps = greedy(stepper, START, END, max_length=10, stepping=live)
    assert [h.tokens for h in hyps] == [(A,), (B, X, Y)]
    assert [h.log_prob for h in hyps] == [0.0, 0.0]
    assert stepper.asked == [2, 2, 1, 1]
    stepper = Counting([short, long], [0, 1])
    assert [h.tokens for h in greedy(stepper, START, END, max_length=10, stepping=every)] == [(A,), (B, X, Y)]
    assert stepper.asked == [2, 2, 2, 2]  # all done after step 4 (index 3), the first check
    stepper = Counting([short, long], [0, 1])
    greedy(stepper, START, END, max_length=10, stepping=Stepping(live_rows=False, check_every=3))
    assert stepper.asked == [2] * 6  # checks after steps 3 and 6
    stepper = Counting([TRAP], [0])
    (beam,) = beam_search(stepper, START, END, beam_size=2, num_return=2, stepping=live)
    assert [h.tokens for h in beam] == [(B, Z), (A, X)]
    assert stepper.asked == [1, 2, 2]
    stepper = Counting([TRAP], [0])
    beam_search(stepper, START, END, beam_size=2, num_return=2, stepping=every)
    assert stepper.asked == [2, 2, 2, 2]  # every row of the beam, until the check at step 4


def test_the_default_stepping_follows_the_device():
    assert Stepping.default(torch.device("cpu")) == Stepping(live_rows=True)
    assert Stepping.default(torch.device("cuda")) == Stepping(live_rows=False, check_every=CUDA_CHECK_EVERY)


# -- agreement with the previous implementation -----------------------------------------------------------
@on_every_device
@pytest.mark.parametrize("seed", range(6))
def test_beam_search_and_greedy_agree_with_the_previous_implementation(seed, device, stepping):
    import reference_search

    decoder = random_decoder(seed=seed, layers=1 + seed % 2).to(device)
    features = torch.randn(4, 8, generator=torch.Generator().manual_seed(seed)).to(device)
    options = dict(max_length=7, banned=(0, START, 3))
    previous = PreviousProtocol(LSTMStepper(decoder, features))  # the same steps, the previous search code
    for k, penalty in ((1, 0.0), (3, 0.5), (5, 1.0)):
        new = beam_search(LSTMStepper(decoder, features), START, END, beam_size=k, length_penalty=penalty,
                          num_return=k, stepping=stepping, **options)
        old = reference_search.beam_search(previous, features, START, END, beam_size=k, length_penalty=penalty,
                                           num_return=k, **options)
        for new_hyps, old_hyps in zip(new, old):
            assert [h.tokens for h in new_hyps] == [h.tokens for h in old_hyps]
            assert [h.truncated for h in new_hyps] == [h.truncated for h in old_hyps]
            # both sum float32 log-probabilities of at most 8 tokens: agreement to float32 rounding
            assert [h.log_prob for h in new_hyps] == pytest.approx([h.log_prob for h in old_hyps], abs=1e-5)
    new_g = greedy(LSTMStepper(decoder, features), START, END, stepping=stepping, **options)
    old_g = reference_search.greedy(previous, features, START, END, **options)
    assert [h.tokens for h in new_g] == [h.tokens for h in old_g]
    assert [h.log_prob for h in new_g] == pytest.approx([h.log_prob for h in old_g], abs=1e-5)


class PreviousProtocol:
    """A stepper in the step-decoder protocol the previous searches drove."""

    def __init__(self, stepper):
        self.stepper = stepper
        self.step, self.reorder_state = stepper.step, stepper.reorder

    def init_state(self, features):
        return self.stepper.state


# -- constrained beam search ----------------------------------------------------------------------------------
# The likeliest caption is "A X" (0.6 * 0.9); captions with Z: "B Z" (0.3 * 0.5 = 0.15) and "A Y Z"
# (0.6 * 0.1 * 1.0 * ... ); captions with C: only "B C" (0.3 * 0.5 = 0.15).
WORDS = markov_table({
    START: {A: 0.6, B: 0.3, X: 0.1},
    A: {X: 0.9, Y: 0.1},
    B: {Z: 0.5, C: 0.5},
    X: {END: 1.0}, Y: {Z: 0.6, END: 0.4}, Z: {END: 1.0}, C: {END: 1.0},
}, vocab_size=9)


def constrained(table, constraints, **kwargs):
    from captioner.decoding import Constraint

    per_image = [[Constraint(tuple(tuple(p) for p in c)) for c in constraints]]
    return run(beam_search, table, constraints=per_image, **kwargs)[0]


def best_with(table, must, max_length=4, length_penalty=0.0):
    """The best sequence (by the length-normalised score) containing every phrase group of ``must``."""
    def contains(seq, phrase):
        return any(tuple(seq[i:i + len(phrase)]) == tuple(phrase) for i in range(len(seq)))

    candidates = [(seq, lp) for seq, lp in all_sequences(table, max_length, 9)
                  if lp > -math.inf and all(any(contains(seq, p) for p in group) for group in must)]
    return max(candidates, key=lambda s: s[1] / (len(s[0]) + 1) ** length_penalty)


@on_every_device
def test_constraint_forces_the_most_probable_caption_that_has_the_word(device, stepping):
    unconstrained = run(beam_search, WORDS, stepping=stepping, device=device, beam_size=3, length_penalty=0.0)[0][0]
    assert Z not in unconstrained.tokens
    (h,) = constrained(WORDS, [[[Z]]], device=device, beam_size=3, length_penalty=0.0, stepping=stepping)
    seq, lp = best_with(WORDS, [[[Z]]])
    assert h.tokens == seq == (B, Z) and h.unmet == 0
    assert h.log_prob == pytest.approx(lp, abs=1e-5)


def test_a_disjunction_takes_whichever_alternative_scores_best(stepping):
    (h,) = constrained(WORDS, [[[C], [Y]]], beam_size=3, length_penalty=0.0, stepping=stepping)
    assert h.tokens == best_with(WORDS, [[[C], [Y]]])[0] == (B, C)
    (h,) = constrained(WORDS, [[[C], [Y]]], beam_size=3, length_penalty=1.0, stepping=stepping)
    assert h.tokens == best_with(WORDS, [[[C], [Y]]], length_penalty=1.0)[0]


@on_every_device
def test_two_constraints_and_a_phrase(device, stepping):
    (h,) = constrained(WORDS, [[[Y]], [[Z]]], device=device, beam_size=3, length_penalty=0.0, stepping=stepping)
    assert h.tokens == (A, Y, Z) and h.unmet == 0
    (h,) = constrained(WORDS, [[[Y, Z]]], device=device, beam_size=3, length_penalty=0.0, stepping=stepping)
    assert h.tokens == (A, Y, Z)
    # the phrase "Z Y" never occurs (Z is always followed by <end>): the best caption meeting none
    (h,) = constrained(WORDS, [[[Z, Y]]], device=device, beam_size=3, length_penalty=0.0, stepping=stepping)
    assert h.unmet == 1 and h.tokens == (A, X)


def test_an_impossible_constraint_returns_the_best_caption_meeting_the_most(stepping):
    # C only follows B, and B is banned: of two constraints only one can be met.
    (h,) = constrained(WORDS, [[[Z]], [[C]]], beam_size=3, length_penalty=0.0, banned=(B,), stepping=stepping)
    assert h.unmet == 1 and Z in h.tokens


def test_constraints_on_wide_beams_match_enumeration(stepping, seed=3):
    torch.manual_seed(seed)
    probs = torch.rand(9, 9) ** 3 + 1e-3
    probs[:, 0] = 0.0
    probs[:, START] = 0.0
    table = (probs / probs.sum(1, keepdim=True)).tolist()
    for must in ([[[A]]], [[[A], [B]], [[X]]], [[[Y, Z]]]):
        (h,) = constrained(table, must, beam_size=60, max_length=3, length_penalty=0.0, banned=(0, START),
                           stepping=stepping)
        seq, lp = best_with(table, must, max_length=3)
        assert h.tokens == seq and h.log_prob == pytest.approx(lp, abs=1e-4)


@on_every_device
@pytest.mark.parametrize("seed", range(3))
def test_batched_constrained_search_equals_one_image_at_a_time(seed, device):
    from captioner.decoding import Constraint

    decoder = random_decoder(seed=seed).to(device)
    features = torch.randn(3, 8, generator=torch.Generator().manual_seed(seed)).to(device)
    per_image = [[Constraint(((5,), (6,)))], [], [Constraint(((7,),)), Constraint(((9, 10),))]]
    options = dict(beam_size=3, num_return=2, length_penalty=0.5)
    batched = beam_search(LSTMStepper(decoder, features), START, END, constraints=per_image, **options)
    for i in range(3):
        single = beam_search(LSTMStepper(decoder, features[i:i + 1]), START, END, constraints=[per_image[i]],
                             **options)[0]
        assert [h.tokens for h in single] == [h.tokens for h in batched[i]]
    unconstrained = beam_search(LSTMStepper(decoder, features[1:2]), START, END, **options)
    assert [h.tokens for h in unconstrained[0]] == [h.tokens for h in batched[1]]


# -- phrase matching and what a request may cost --------------------------------------------------------------------
def meets(phrases, sequence) -> bool:
    from captioner.decoding.constraints import ConstraintAutomaton

    automaton = ConstraintAutomaton([Constraint(tuple(tuple(p) for p in phrases))])
    state = 0
    for token in sequence:
        state = (automaton.next_state[state][automaton.tokens.index(token)] if token in automaton.tokens
                 else automaton.reset[state])
    return automaton.met[state] == 1


def contains(sequence, phrase) -> bool:
    return any(tuple(sequence[i:i + len(phrase)]) == tuple(phrase) for i in range(len(sequence)))


def test_a_phrase_is_found_after_a_false_start():
    assert meets([[A, A, B]], [A, A, A, B])
    assert meets([[A, B, A, C]], [A, B, A, B, A, C])
    assert meets([[A, B, C], [B, X]], [A, B, X])  # the other alternative, starting inside the first
    assert not meets([[A, B]], [A, C, B]) and not meets([[A, A, B]], [A, B, A, B])


@settings(max_examples=300, deadline=None)
@given(phrases=st.lists(st.lists(st.integers(3, 5), min_size=1, max_size=4), min_size=1, max_size=3),
       sequence=st.lists(st.integers(3, 6), max_size=10))
def test_phrase_matching_agrees_with_a_substring_search(phrases, sequence):
    assert meets(phrases, sequence) == any(contains(sequence, p) for p in phrases)


def test_the_search_finds_a_caption_that_meets_a_phrase_after_a_false_start(stepping):
    # a -> a 0.9 or b 0.1: "a a a b" has the best mean log-probability within 4 words, and contains "a a b"
    table = markov_table({START: {A: 1.0}, A: {A: 0.9, B: 0.1}, B: {END: 1.0}}, vocab_size=9)
    (h,) = constrained(table, [[[A, A, B]]], beam_size=8, max_length=4, length_penalty=1.0, stepping=stepping)
    seq, lp = best_with(table, [[[A, A, B]]], max_length=4, length_penalty=1.0)
    assert h.tokens == seq == (A, A, A, B) and h.unmet == 0 and h.log_prob == pytest.approx(lp, abs=1e-5)


def test_phrase_tokens_are_candidates_only_as_constraint_tokens(stepping):
    """A constraint's token proposed as an ordinary word too would give the same caption twice,
    once wrongly counted as missing the constraint."""
    hyps = constrained(WORDS, [[[Z]]], beam_size=5, num_return=5, length_penalty=0.0, stepping=stepping)
    assert len({h.tokens for h in hyps}) == len(hyps)
    for h in hyps:
        assert (h.unmet == 0) == (Z in h.tokens), h


def test_constraints_that_would_cost_too_much_are_refused():
    from captioner.decoding.constraints import MAX_LEVELS, MAX_PHRASE_WORDS, ConstraintAutomaton
    from captioner.errors import ArgumentError

    with pytest.raises(ArgumentError, match=f"a phrase of {MAX_PHRASE_WORDS + 1} words"):
        ConstraintAutomaton([Constraint(((A,) * (MAX_PHRASE_WORDS + 1),))])
    four = [Constraint(((A, B, C, X, Y, Z),), f"c{i}") for i in range(5)]
    with pytest.raises(ArgumentError, match=f"cover 30 words together; at most {MAX_LEVELS}"):
        ConstraintAutomaton(four)
    # Three-word phrases of distinct words: a state is the set of constraints met and at most one
    # partial match (one of the unmet constraints, one or two words in). With n constraints of p
    # phrases each: sum over met sets S of 1 + 2p(n - |S|) = 2^n + 2p n 2^(n-1) states.
    def distinct(n, p):
        return [Constraint(tuple((100 * i + 10 * j, 100 * i + 10 * j + 1, 100 * i + 10 * j + 2) for j in range(p)),
                           f"c{i}") for i in range(n)]

    assert ConstraintAutomaton(distinct(4, 1)).size == 2 ** 4 + 2 * 4 * 2 ** 3 == 80
    assert ConstraintAutomaton(distinct(8, 1)).size == 2 ** 8 + 2 * 8 * 2 ** 7 == 2304
    with pytest.raises(ArgumentError, match="too many ways of being partly met"):
        ConstraintAutomaton(distinct(8, 8))  # 2^8 + 16 * 8 * 2^7 = 16640 states
    with pytest.raises(ArgumentError, match="too many ways of being partly met"):
        ConstraintAutomaton(distinct(4, 2), max_states=80 + 4 * 2 ** 3 * 2 - 1)  # one short
    assert ConstraintAutomaton(distinct(4, 2), max_states=80 + 4 * 2 ** 3 * 2).size == 144
    # Runs of one word of lengths 1..6 share their partial matches: a state is the longest run so far
    # M (the runs up to M are met) and the current run r <= M; with M = 6 all are met: 1 + ... + 6 + 1.
    assert ConstraintAutomaton([Constraint(((A,) * n,)) for n in range(1, 7)]).size == 22
