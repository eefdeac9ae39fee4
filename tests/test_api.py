"""The Python API: paths, PIL images and tensors give the same captions."""

import pytest
import torch

from captioner import Captioner
from captioner.data.images import ImageLoadError, load_image
from captioner.data.preprocess import pil_to_tensor, preprocess
from helpers import DEVICES


@pytest.fixture(scope="module", params=DEVICES)
def captioner(tiny_ckpt, request):
    return Captioner.from_checkpoint(tiny_ckpt, device=request.param)


def test_paths_pil_images_and_tensors_agree(captioner, examples_dir):
    paths = [str(examples_dir / n) for n in ("coffee.jpg", "coins.jpg", "astronaut.jpg")]
    images = [load_image(p) for p in paths]
    by_path = [r.text for r in captioner.caption(paths)]
    by_pil = [r.text for r in captioner.caption(images)]
    by_uint8 = [r.text for r in captioner.caption([pil_to_tensor(im) for im in images])]
    assert by_path == by_pil == by_uint8
    assert all(by_path)
    single = captioner.caption(paths[0])
    assert len(single) == 1 and single[0].text == by_path[0] and single[0].source == paths[0]


def greedy_by_hand(captioner, pixels, max_length=20):
    """The most probable word at every step, written out with the model's own parts:
    preprocess -> encoder -> decoder.step, never <pad>/<start>/<unk>, no <end> first."""
    vocab, decoder = captioner.vocab, captioner.model.decoder
    with torch.no_grad():
        features = captioner.model.encoder(preprocess(pixels, captioner.preprocessing).to(captioner.device))
        texts = []
        for row in features:
            state, token, words = decoder.init_state(row[None]), vocab.start_id, []
            for t in range(max_length):
                log_probs, state = decoder.step(torch.tensor([token], device=captioner.device), state)
                log_probs[0, list(vocab.never_generated) + ([vocab.end_id] if t == 0 else [])] = -float("inf")
                token = int(log_probs[0].argmax())
                if token == vocab.end_id:
                    break
                words.append(vocab.itos[token])
            texts.append(" ".join(words))
    return texts


def test_float_tensor_batch(captioner):
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand(3, 3, 120, 90, generator=generator)
    results = captioner.caption(batch, method="greedy", guide="none")
    assert [r.text for r in results] == greedy_by_hand(captioner, batch)
    assert all(r.text for r in results)


def test_n_best_and_decoding_options(captioner, examples_dir):
    (result,) = captioner.caption(str(examples_dir / "cat.jpg"), beam_size=5, num_captions=4)
    assert len(result.captions) == 4
    assert [c.score for c in result.captions] == sorted((c.score for c in result.captions), reverse=True)
    with pytest.raises(ValueError, match="unknown decoding method"):
        captioner.caption(str(examples_dir / "cat.jpg"), method="nucleus")


def test_unreadable_path_raises_with_the_file_name(captioner, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageLoadError, match="bad.png"):
        captioner.caption(str(tmp_path / "bad.png"))
    results = list(captioner.caption_files([str(tmp_path / "bad.png")]))
    assert results[0].error and results[0].text is None


def test_device_choice(tiny_ckpt):
    if torch.cuda.is_available():
        assert Captioner.from_checkpoint(tiny_ckpt, device="cuda").device.type == "cuda"
    else:
        with pytest.raises(ValueError, match="no CUDA GPU"):
            Captioner.from_checkpoint(tiny_ckpt, device="cuda")
    assert Captioner.from_checkpoint(tiny_ckpt, device="cpu").device.type == "cpu"


@pytest.mark.parametrize("device", DEVICES)
def test_unknown_word_token_is_never_generated(tiny_ckpt, examples_dir, device):
    captioner = Captioner.from_checkpoint(tiny_ckpt, device=device)
    unk = captioner.vocab.unk_id
    with torch.no_grad():
        captioner.model.decoder.out.bias[unk] = 100.0  # the model now wants <unk> everywhere
    image = str(examples_dir / "cat.jpg")
    for options in ({"method": "greedy"}, {"method": "beam", "beam_size": 3, "num_captions": 3},
                    {"method": "sample", "num_captions": 3}):
        (result,) = captioner.caption(image, **options)
        assert result.captions and all("<unk>" not in c.text.split() for c in result.captions)


def test_files_stream_one_batch_at_a_time(captioner, tmp_path, monkeypatch):
    """Memory stays flat on a large folder: a result comes out before the next batch is read,
    so at most one batch of images is held, whatever the number of files."""
    from PIL import Image

    from captioner.data.batches import ImagePathDataset

    paths = []
    for i in range(10):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (12, 9), (20 * i, 100, 200)).save(paths[-1])
    reads = []
    real = ImagePathDataset.__getitem__
    monkeypatch.setattr(ImagePathDataset, "__getitem__", lambda self, i: reads.append(i) or real(self, i))
    read_when_yielded = [len(reads) for _ in captioner.caption_files(paths, batch_size=4, method="greedy")]
    assert read_when_yielded == [4, 4, 4, 4, 8, 8, 8, 8, 10, 10]
