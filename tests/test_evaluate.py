"""Evaluation: the retrieval baselines on hand-built cases, and `captioner evaluate` end to end."""

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from captioner.cli import main
from captioner.config import config_from_dict
import captioner.evaluation as evaluate_module
from captioner.evaluation import consensus_caption, most_frequent_caption, nearest_neighbour_captions
from captioner.training.run import train
from helpers import HANG_GUARD_S
from shapes import make_shapes, write_karpathy
from test_training import SUBPROCESS_ENV


def test_nearest_neighbour_uses_cosine_similarity():
    train_features = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    captions = ["east", "north", "north-east"]
    queries = np.array([[5.0, 0.2], [0.1, 0.3], [2.0, 1.9], [10.0, 9.0]])
    # (10, 9) is far from (1, 1) in distance but closest in angle
    assert nearest_neighbour_captions(train_features, captions, queries) == ["east", "north", "north-east",
                                                                              "north-east"]
    assert nearest_neighbour_captions(train_features, captions, queries, chunk=1) == \
        nearest_neighbour_captions(train_features, captions, queries)


def test_most_frequent_caption_normalises_and_breaks_ties_alphabetically():
    assert most_frequent_caption(["A dog.", "a cat", "a dog", "a bird"]) == "a dog"
    assert most_frequent_caption(["b thing", "a thing"]) == "a thing"


def test_consensus_caption_is_the_one_closest_to_the_others():
    raw = ["a red bus", "a red bus on a road", "an apple"]
    assert consensus_caption(raw, [r.split() for r in raw]) == "a red bus"
    assert consensus_caption(["only one"], [["only", "one"]]) == "only one"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    dataset = write_karpathy(root, make_shapes(root))
    settings = {
        "data": {"name": "shapes", "format": "karpathy", "path": str(dataset), "images": str(root / "images"),
                 "min_word_count": 1},
        "model": {"embed_dim": 16, "hidden_size": 32, "dropout": 0.2},
        "train": {"out_dir": str(root / "run"), "cache_dir": str(root / "cache"), "epochs": 8, "batch_size": 16,
                  "lr": 1e-2, "early_stopping": 0},
        "decode": {"beam_size": 3, "length_penalty": 1.0},
    }
    train(config_from_dict(settings))
    config = root / "config.yaml"
    config.write_text(json.dumps({"data": settings["data"], "train": {"cache_dir": str(root / "cache")}}))
    return root, config, root / "run" / "best.pt"


@pytest.mark.slow
def test_evaluate_scores_every_system_with_the_decoding_it_used(trained, tmp_path, capsys, monkeypatch):
    root, config, checkpoint = trained
    out, predictions = tmp_path / "scores.json", tmp_path / "predictions"
    calls = []
    real_decode = evaluate_module.caption_features

    def spy(captioner, features, settings, **options):
        calls.append((settings.method, settings.beam_size, settings.length_penalty, settings.max_length))
        return real_decode(captioner, features, settings, **options)

    monkeypatch.setattr(evaluate_module, "caption_features", spy)
    assert main(["evaluate", "--config", str(config), "--checkpoint", str(checkpoint), "--split", "test",
                 "--method", "greedy,beam", "--beam-size", "2", "--length-penalty", "0.5", "--max-length", "7",
                 "--baseline", "nn,frequent", "--json", str(out), "--predictions", str(predictions),
                 "--html", str(tmp_path / "page.html"), "--quiet"]) == 0
    assert [c for c in calls if c[0] == "beam"] == [("beam", 2, 0.5, 7)]
    assert [c[3] for c in calls if c[0] == "greedy"] == [7]
    table = capsys.readouterr().out
    assert "test split, 9 images" in table and "beam2: length penalty 0.5" in table
    summary = json.loads(out.read_text())
    decoding = summary["decoding"]
    assert (decoding["beam_size"], decoding["length_penalty"], decoding["max_length"]) == (2, 0.5, 7)
    assert set(summary["systems"]) == {"greedy", "beam2", "nn", "frequent"}
    scores = {name: system["scores"] for name, system in summary["systems"].items()}
    assert {"BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D"} <= set(scores["greedy"])
    # shapes: the nearest training image is the same shape and colour; one caption for all cannot be
    assert scores["nn"]["CIDEr-D"] > 2 * scores["frequent"]["CIDEr-D"], scores
    frequent = [json.loads(line) for line in (predictions / "test-frequent.jsonl").read_text().splitlines()]
    assert len(frequent) == 9 and len({row["caption"] for row in frequent}) == 1
    for name in ("greedy", "beam2", "nn"):
        rows = [json.loads(line) for line in (predictions / f"test-{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 9 and all(row["caption"] and row["references"] for row in rows)
    # the page: every image (fewer than 50) best first by the first system's CIDEr-D, its captions, the table
    page = (tmp_path / "page.html").read_text()
    greedy = {Path(row["path"]).name: row for row in
              map(json.loads, (predictions / "test-greedy.jsonl").read_text().splitlines())}
    cider = {name: summary["systems"]["greedy"]["per_image"][str(row["image_id"])]["CIDEr-D"]
             for name, row in greedy.items()}
    shown = re.findall(r"<br>([^<]+\.png)</td>", page)
    assert sorted(shown) == sorted(greedy) and "9 best by CIDEr-D of greedy" in page and "worst" not in page
    assert [cider[name] for name in shown] == sorted(cider.values(), reverse=True)
    assert html.escape(greedy[shown[0]]["caption"]) in page
    # the same predictions as COCO results files, as coco-caption's loadRes reads them
    coco = tmp_path / "coco"
    assert main(["evaluate", "--config", str(config), "--checkpoint", str(checkpoint), "--split", "test",
                 "--method", "greedy", "--max-length", "7", "--predictions", str(coco),
                 "--predictions-format", "coco", "--quiet"]) == 0
    results = json.loads((coco / "test-greedy.json").read_text())
    assert [sorted(r) for r in results] == [["caption", "image_id"]] * 9
    assert {r["image_id"]: r["caption"] for r in results} == \
        {int(row["image_id"]): row["caption"] for row in greedy.values()}
    assert f"{scores['nn']['CIDEr-D']:.1f}" in page


def test_evaluate_rejects_unknown_methods_and_baselines(trained, capsys):
    root, config, checkpoint = trained
    for option, value in (("--baseline", "knn"), ("--method", "sample")):
        with pytest.raises(SystemExit) as stop:  # refused by the parser, as any other bad choice
            main(["evaluate", "--config", str(config), "--checkpoint", str(checkpoint), option, value])
        assert stop.value.code == 2 and f"argument {option}: {value!r} is not one of" in capsys.readouterr().err
    for option, value in (("--beam-size", "0"), ("--max-length", "0"), ("--length-penalty", "-1")):
        assert main(["evaluate", "--config", str(config), "--checkpoint", str(checkpoint), option, value]) == 2
        assert option in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_share_the_decoding_and_score_as_one(trained, tmp_path):
    """Under torchrun each process decodes every other test image; process 0 puts the captions
    back in order and scores them: the same predictions and scores as one process."""
    root, config, checkpoint = trained
    args = ["evaluate", "--config", str(config), "--checkpoint", str(checkpoint), "--split", "test",
            "--method", "greedy", "--baseline", "frequent", "--quiet"]
    assert main([*args, "--json", str(tmp_path / "one.json"), "--predictions", str(tmp_path / "one")]) == 0
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "captioner", *args, "--json", str(tmp_path / "two.json"),
                          "--predictions", str(tmp_path / "two")],
                         capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=HANG_GUARD_S)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("test split, 9 images") == 1  # one table, from process 0
    for name in ("test-greedy.jsonl", "test-frequent.jsonl"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["systems"] == two["systems"]
