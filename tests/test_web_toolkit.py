"""What the web page does, without a browser: the toolkit's calls into the API, its limits, and the
state that requests share (the captioner's proxy table) under concurrent requests."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import captioner.api as api
from captioner.errors import ArgumentError, UserError
from captioner.web.toolkit import MAX_VISUALIZE_IMAGES, Toolkit, split_list


@pytest.fixture(scope="module")
def toolkit():
    return Toolkit()


def test_split_list_drops_empties_and_spaces():
    assert split_list(" cat|kitten, ,dog ") == ["cat|kitten", "dog"] and split_list(None) == []


def test_caption_is_the_apis_record_and_a_bad_file_is_a_record_with_its_error(toolkit, examples_dir, tmp_path):
    record = toolkit.caption(str(examples_dir / "coffee.jpg"), include=["cup"], method="beam", num_captions=2)
    expected = toolkit.captioner.caption(str(examples_dir / "coffee.jpg"), include=["cup"], num_captions=2)[0]
    assert record == expected.to_dict()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    assert toolkit.caption(str(broken)) == {"path": str(broken), "error": f"{broken}: empty file (0 bytes)"}
    with pytest.raises(UserError, match="beam_size must be at least 1"):
        toolkit.caption(str(broken), beam_size=0)  # bad settings: the API's one-line error, before reading


def test_visualize_refuses_what_a_page_should_not_ask(toolkit):
    with pytest.raises(ArgumentError, match="at most 16"):
        toolkit.visualize("class", ",".join(["espresso"] * (MAX_VISUALIZE_IMAGES + 1)), steps=1)
    with pytest.raises(ArgumentError, match="steps must be between 1 and 256"):
        toolkit.visualize("class", "espresso", steps=1000)
    with pytest.raises(ArgumentError, match="name a class"):
        toolkit.visualize("class", " , ", steps=1)


def test_the_proxy_table_keeps_every_word_under_concurrent_requests(monkeypatch):
    """Three requests name three new words at once. Choosing proxies is slowed down so that,
    without the captioner's lock, each request would publish a table with only its own word
    (and give all three the same id)."""
    captioner = api.Captioner.from_checkpoint()
    real = api.choose_proxies

    def slow(*args, **kwargs):
        time.sleep(0.1)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "choose_proxies", slow)
    words = ["kitty", "tabby", "wallaby"]  # outside the vocabulary, each with a proxy
    start = threading.Barrier(len(words))

    def ask(word):
        start.wait()
        return captioner.lexicon([word]).ids[word]

    with ThreadPoolExecutor(len(words)) as pool:
        ids = list(pool.map(ask, words))
    final = captioner.lexicon()
    assert len(set(ids)) == 3 and {w: final.ids[w] for w in words} == dict(zip(words, ids))


def test_serve_binds_to_this_machine_unless_told_otherwise():
    from captioner.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    assert build_parser().parse_args(["serve", "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_commands_other_than_serve_do_not_import_gradio():
    import subprocess
    import sys

    code = "import sys; from captioner.cli import build_parser; build_parser(); print('gradio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
