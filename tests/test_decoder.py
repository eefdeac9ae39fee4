"""The LSTM decoder: parameter count, initial state, teacher forcing == stepping."""

import pytest
import torch

from captioner.models import DecoderConfig, LSTMDecoder
from captioner.models.stepping import InputGateTables, LSTMStepper
from helpers import random_decoder


@pytest.mark.parametrize("embed,hidden,layers", [(8, 16, 1), (32, 24, 2), (5, 7, 3)])
def test_lstm_parameter_count_matches_the_textbook_formula(embed, hidden, layers):
    """A textbook LSTM layer with input size m and n units has 4(nm + n^2 + n) parameters
    (one bias per gate unit). PyTorch keeps two bias vectors (b_ih and b_hh), so each layer
    has 4(nm + n^2 + 2n): 4n more. Layers after the first take the n-d output as input."""
    decoder = LSTMDecoder(DecoderConfig(vocab_size=11, feature_dim=6, embed_dim=embed,
                                        hidden_size=hidden, num_layers=layers))
    n = hidden
    textbook = sum(4 * (n * m + n * n + n) for m in [embed] + [n] * (layers - 1))
    pytorch = sum(p.numel() for p in decoder.lstm.parameters())
    assert pytorch == textbook + layers * 4 * n


def test_initial_state_is_a_projection_of_the_features_for_every_layer():
    decoder = LSTMDecoder(DecoderConfig(vocab_size=9, feature_dim=4, embed_dim=3, hidden_size=5,
                                        num_layers=2, dropout=0.0))
    features = torch.randn(3, 4)
    h0, c0 = decoder.init_state(features)
    assert h0.shape == c0.shape == (2, 3, 5)
    expected_h = decoder.init_h(features).view(3, 2, 5)
    for layer in range(2):
        assert torch.allclose(h0[layer], expected_h[:, layer])
    assert not torch.allclose(h0, c0)


def test_teacher_forced_logits_equal_step_by_step_logits():
    decoder = random_decoder(vocab_size=10, layers=2, seed=3)
    features = torch.randn(3, 8)
    # captions of different lengths, padded with 0
    captions = torch.tensor([[1, 5, 6, 7, 2], [1, 4, 2, 0, 0], [1, 9, 8, 2, 0]])
    lengths = torch.tensor([5, 3, 4])
    with torch.no_grad():
        logits = decoder(features, captions, lengths)
        assert logits.shape == (3, 4, 10)
        for i in range(3):
            state = decoder.init_state(features[i:i + 1])
            for t in range(int(lengths[i]) - 1):
                log_probs, state = decoder.step(captions[i, t:t + 1], state)
                assert torch.allclose(log_probs[0], logits[i, t].log_softmax(-1), atol=1e-5)
            # positions past the end of a caption produce the bias only (zero LSTM output)
            if lengths[i] < 5:
                assert torch.allclose(logits[i, int(lengths[i]) - 1], decoder.out.bias)


def test_padding_does_not_change_a_caption_logits():
    decoder = random_decoder(seed=4)
    features = torch.randn(1, 8)
    short = torch.tensor([[1, 3, 4, 2]])
    padded = torch.tensor([[1, 3, 4, 2, 0, 0, 0]])
    with torch.no_grad():
        a = decoder(features, short, torch.tensor([4]))
        b = decoder(features, padded, torch.tensor([4]))
    assert torch.allclose(a, b[:, :3], atol=1e-6)


def test_gradients_reach_every_parameter():
    decoder = random_decoder(seed=5)
    decoder.train()
    features = torch.randn(2, 8, requires_grad=True)
    captions = torch.tensor([[1, 5, 6, 2], [1, 4, 2, 0]])
    logits = decoder(features, captions, torch.tensor([4, 3]))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 12), captions[:, 1:].reshape(-1), ignore_index=0)
    loss.backward()
    for name, p in decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert features.grad.abs().sum() > 0


def test_config_validation_and_roundtrip():
    config = DecoderConfig(vocab_size=5, feature_dim=3, num_layers=2, dropout=0.1)
    assert DecoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="hidden_size"):
        DecoderConfig(vocab_size=5, feature_dim=3, hidden_size=0)
    with pytest.raises(ValueError, match="unknown decoder config keys"):
        DecoderConfig.from_dict({**config.to_dict(), "hiden_size": 3})
    with pytest.raises(ValueError, match="features of shape"):
        LSTMDecoder(config).init_state(torch.zeros(2, 4))


@pytest.mark.parametrize("key, value, message", [
    ("hidden_size", "512", "decoder hidden_size must be a whole number, got '512' (a str)"),
    ("num_layers", 1.0, "decoder num_layers must be a whole number, got 1.0 (a float)"),
    ("vocab_size", True, "decoder vocab_size must be a whole number, got True (a bool)"),
    ("dropout", "0.5", "decoder dropout must be a number, got '0.5' (a str)"),
])
def test_config_values_of_the_wrong_type_say_which_key_and_value(key, value, message):
    """A checkpoint's config may hold anything; the message names the key, not Python's '<='."""
    with pytest.raises(ValueError) as info:
        DecoderConfig.from_dict({"vocab_size": 5, "feature_dim": 3, key: value})
    assert str(info.value) == message


def test_layernorm_feature_normalisation_makes_the_start_state_scale_invariant():
    config = DecoderConfig(vocab_size=9, feature_dim=6, embed_dim=3, hidden_size=5, dropout=0.0,
                           feature_norm="layernorm")
    torch.manual_seed(0)
    decoder = LSTMDecoder(config)
    features = torch.randn(2, 6)
    h_a, c_a = decoder.init_state(features)
    h_b, c_b = decoder.init_state(features * 7.0 + 3.0)  # LayerNorm removes scale and shift...
    # ...up to its eps: LayerNorm(7x + 3) = (x - mean) / sqrt(var + eps / 49), not / sqrt(var + eps).
    # The normalised features then differ by dz, and h0 = W z + b by at most |W| |dz|; float32
    # rounding of values of size ~1 through a 6-term sum adds well under 1e-5.
    x = features.double()
    centred, var, eps = x - x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True), decoder.feature_norm.eps
    dz = (centred * ((var + eps / 49) ** -0.5 - (var + eps) ** -0.5)).abs().float()
    for layer, a, b in ((decoder.init_h, h_a, h_b), (decoder.init_c, c_a, c_b)):
        bound = dz @ layer.weight.detach().abs().T + 1e-5
        assert ((a[0] - b[0]).abs() <= bound).all()
    plain = LSTMDecoder(DecoderConfig(vocab_size=9, feature_dim=6, embed_dim=3, hidden_size=5, dropout=0.0))
    assert not torch.allclose(plain.init_state(features)[0], plain.init_state(features * 7.0 + 3.0)[0])
    assert DecoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="feature_norm"):
        DecoderConfig(vocab_size=9, feature_dim=6, feature_norm="batch")


def test_small_cpu_batches_step_without_onednn_and_agree_with_it(monkeypatch):
    from captioner.models import decoder as module
    from captioner.models.decoder import OWN_KERNEL_MAX_ROWS, lstm_kernel_for

    seen = []
    with lstm_kernel_for(torch.zeros(OWN_KERNEL_MAX_ROWS, 1, 4)):
        seen.append(torch.backends.mkldnn.enabled)
    with lstm_kernel_for(torch.zeros(OWN_KERNEL_MAX_ROWS + 1, 1, 4)):
        seen.append(torch.backends.mkldnn.enabled)
    with lstm_kernel_for(torch.zeros(1, 1, 4, device="meta")):  # any other device: untouched
        seen.append(torch.backends.mkldnn.enabled)
    assert seen == [False, True, True] and torch.backends.mkldnn.enabled
    with pytest.raises(RuntimeError), lstm_kernel_for(torch.zeros(1, 1, 4)):
        raise RuntimeError("restored after an error too")
    assert torch.backends.mkldnn.enabled

    torch.manual_seed(0)
    decoder = LSTMDecoder(DecoderConfig(vocab_size=50, feature_dim=8, embed_dim=16, hidden_size=32,
                                        dropout=0.0)).eval()
    tokens, state = torch.tensor([1, 2, 3]), decoder.init_state(torch.randn(3, 8))
    with torch.no_grad():
        own, _ = decoder.step(tokens, state)
        monkeypatch.setattr(module, "OWN_KERNEL_MAX_ROWS", 0)
        onednn, _ = decoder.step(tokens, state)
    # the same LSTM step computed by two kernels: float32 rounding apart, not bit for bit
    assert torch.allclose(own, onednn, atol=1e-5, rtol=0)


def _small_decoder(layers=1):
    torch.manual_seed(layers)
    return LSTMDecoder(DecoderConfig(vocab_size=30, feature_dim=8, embed_dim=16, hidden_size=24,
                                     num_layers=layers, dropout=0.0)).eval()


def _lstm_step(decoder, tokens, state):
    """The decoder's own step: ``nn.LSTM``."""
    with torch.no_grad():
        log_probs, (h, c) = decoder.step(tokens, state)
    return log_probs, h, c


def _fast_step(decoder, tokens, features, tables=None):
    """A search's stepper on the CPU without gradients: the hand-computed cell."""
    with torch.no_grad():
        stepper = LSTMStepper(decoder, features, **({"tables": tables} if tables else {}))
        assert stepper.fast
        log_probs, (h, c) = stepper.step(tokens, stepper.state)
    return log_probs, h, c


@pytest.mark.parametrize("layers", [1, 2])
def test_the_cpu_stepper_is_the_lstm_step_and_follows_weight_changes(layers):
    """Without gradients in eval mode on a CPU, a stepper computes the LSTM cell itself from a
    word -> input-gate table; it must give nn.LSTM's step (float32 rounding of sums of ~50
    terms of size ~1: well under 1e-5), and a changed weight must change the next search's steps."""
    decoder, tables = _small_decoder(layers), InputGateTables()
    tokens, features = torch.tensor([1, 7, 7, 29]), torch.randn(4, 8)

    def both():
        fast = _fast_step(decoder, tokens, features, tables)
        lstm = _lstm_step(decoder, tokens, decoder.init_state(features))
        for a, b in zip(fast, lstm):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=0)
        return fast[0]

    first = both()
    assert tables.table(decoder).shape == (30, 4 * 24)
    with torch.no_grad():  # in place, as an optimizer step or load_state_dict changes weights
        decoder.embed.weight[7].mul_(-3.0)
        decoder.lstm.bias_hh_l0.add_(0.5)
    second = both()
    assert not torch.allclose(first[1], second[1], atol=1e-3)  # row 1 read word 7
    decoder.lstm.weight_ih_l0 = torch.nn.Parameter(decoder.lstm.weight_ih_l0.detach() * 2)  # replaced
    decoder.lstm.flatten_parameters()
    assert not torch.allclose(second, both(), atol=1e-3)


def test_too_large_an_input_gate_table_is_not_kept():
    decoder = _small_decoder()
    tables = InputGateTables(max_bytes=30 * 96 * 4 - 1)  # one byte short
    assert tables.table(decoder) is None
    tokens, features = torch.tensor([3, 4]), torch.randn(2, 8)
    fast = _fast_step(decoder, tokens, features, tables)
    assert torch.allclose(fast[0], _lstm_step(decoder, tokens, decoder.init_state(features))[0], atol=1e-5, rtol=0)


def test_a_search_after_writes_that_bypass_version_counters_sees_the_new_weights():
    """``.data`` writes (and fused optimizers) change weights without a version bump: the
    next search's stepper must notice, so its steps use the new weights."""
    decoder, tokens, features = _small_decoder(), torch.tensor([5, 9]), torch.randn(2, 8)
    before = _fast_step(decoder, tokens, features)[0]  # the table is built
    decoder.embed.weight.data[5].mul_(-4.0)
    decoder.lstm.weight_ih_l0.data.add_(0.3)
    after = _fast_step(decoder, tokens, features)[0]
    assert torch.allclose(after, _lstm_step(decoder, tokens, decoder.init_state(features))[0], atol=1e-5, rtol=0)
    assert not torch.allclose(before, after, atol=1e-3)


def test_the_stepper_under_gradients_autocast_training_and_inference_mode():
    decoder, tokens, features = _small_decoder(2), torch.tensor([1, 2, 3]), torch.randn(3, 8)
    expected = _lstm_step(decoder, tokens, decoder.init_state(features))[0]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # nn.LSTM's own autocast rules
        stepper = LSTMStepper(decoder, features)
        assert not stepper.fast and torch.isfinite(stepper.step(tokens, stepper.state)[0]).all()
    assert torch.allclose(_fast_step(decoder, tokens, features)[0], expected, atol=1e-5, rtol=0)
    assert not LSTMStepper(decoder, features).fast  # gradients on
    with torch.no_grad():
        assert not LSTMStepper(decoder.train(), features).fast
        assert LSTMStepper(decoder.eval(), features).fast
    with torch.inference_mode():  # a decoder made there has inference tensors, without version counters
        made_there = _small_decoder(2)
        stepper = LSTMStepper(made_there, torch.randn(3, 8))
        assert stepper.fast
        log_probs, _ = stepper.step(tokens, stepper.state)
    assert torch.isfinite(log_probs).all() and log_probs.shape == (3, 30)


def test_the_table_lives_beside_the_decoder_not_in_it():
    import copy
    import gc
    import io

    decoder, tokens, features = _small_decoder(), torch.tensor([4]), torch.randn(1, 8)
    tables = InputGateTables()
    _fast_step(decoder, tokens, features, tables)
    assert len(tables._kept) == 1
    saved, clean = io.BytesIO(), io.BytesIO()
    torch.save(decoder, saved)
    torch.save(copy.deepcopy(_small_decoder()), clean)
    assert len(saved.getvalue()) == len(clean.getvalue())  # the same module without a table
    decoder.double()  # a cast: the table of float32 weights is not used
    state = decoder.init_state(features.double())
    fast = _fast_step(decoder, tokens, features.double(), tables)[0]
    assert fast.dtype == torch.float64
    assert torch.allclose(fast, _lstm_step(decoder, tokens, state)[0], atol=1e-12, rtol=0)
    del decoder
    gc.collect()
    assert len(tables._kept) == 0  # gone with its decoder


def test_a_stepper_made_with_gradients_on_steps_by_hand_in_the_search():
    """Callers make steppers wherever they are; the searches run without gradients, and that is
    where the stepper decides how to step and computes h0 and c0 (a decision taken when it was
    made would have stepped nn.LSTM and built a graph for every caption of the API)."""
    from captioner.decoding import greedy

    decoder, features = _small_decoder(), torch.randn(3, 8)
    stepper = LSTMStepper(decoder, features)  # gradients on here
    greedy(stepper, 1, 2, max_length=4)
    assert stepper.fast and stepper.table is not None and not stepper.state[0].requires_grad
