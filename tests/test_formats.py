"""``caption --output FILE --format jsonl|tsv|coco``, and COCO results scored by ``evaluate``."""

from __future__ import annotations

import json
import shutil

import pytest
from pycocotools.coco import COCO

import captioner.metrics.coco as coco_metrics
from captioner.cli import main
from captioner.errors import ArgumentError
from captioner.formats import coco_image_ids
from helpers import random_images


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """Five images named as COCO names them, and an annotation file with two references each."""
    root = tmp_path_factory.mktemp("coco")
    ids = [42, 7, 139, 1000, 5]
    for image_id, path in zip(ids, random_images(root / "generated", len(ids))):
        shutil.move(path, root / f"COCO_val2014_{image_id:012d}.png")
    (root / "generated").rmdir()
    annotations = {"images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.png"} for i in ids],
                   "annotations": [{"id": 10 * i + k, "image_id": i, "caption": caption}
                                   for i in ids for k, caption in enumerate(["an old cat lying", "a cup of coffee"])]}
    (root / "captions.json").write_text(json.dumps(annotations))
    return root


def caption(fast_ckpt, *args):
    return main(["caption", "--checkpoint", str(fast_ckpt), "--quiet", *map(str, args)])


@pytest.mark.slow
def test_coco_results_load_with_pycocotools_and_score_with_evaluate(tmp_path, fast_ckpt, coco, capsys):
    results, records = tmp_path / "results.json", tmp_path / "records.jsonl"
    assert caption(fast_ckpt, *sorted(coco.glob("*.png")), "--output", results, "--format", "coco") == 0
    assert caption(fast_ckpt, *sorted(coco.glob("*.png")), "--jsonl", records) == 0
    written = json.loads(results.read_text())
    best = [json.loads(line)["captions"][0]["caption"] for line in records.read_text().splitlines()]
    # the files sorted by name: ids 5, 7, 42, 139, 1000
    assert written == [{"image_id": i, "caption": c} for i, c in zip([5, 7, 42, 139, 1000], best)]
    loaded = COCO(str(coco / "captions.json")).loadRes(str(results))
    assert sorted(loaded.getImgIds()) == [5, 7, 42, 139, 1000]
    capsys.readouterr()
    assert main(["evaluate", "--results", str(results), "--annotations", str(coco / "captions.json"),
                 "--json", str(tmp_path / "scores.json")]) == 0
    assert "results split, 5 images" in capsys.readouterr().out
    scores = json.loads((tmp_path / "scores.json").read_text())["systems"]["results.json"]["scores"]
    assert 0 <= scores["BLEU-1"] <= 100 and "CIDEr-D" in scores


def test_a_perfect_results_file_scores_full_marks(tmp_path, coco, capsys, monkeypatch):
    """Known answer: each result is one of its image's references, word for word: BLEU-1 is 100.
    (Without Java here, so the Java tools' start-up does not slow the suite.)"""
    monkeypatch.setattr(coco_metrics, "java_available", lambda: False)
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": i, "caption": "an old cat lying"} for i in [5, 7, 42, 139, 1000]]))
    assert main(["evaluate", "--results", str(results), "--annotations", str(coco / "captions.json"),
                 "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())["systems"]["results.json"]["scores"]
    assert scores["BLEU-1"] == pytest.approx(100.0, abs=1e-6)


def test_results_of_images_not_in_the_annotations_are_one_line(tmp_path, coco, capsys):
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 3, "caption": "a cat"}]))
    assert main(["evaluate", "--results", str(results), "--annotations", str(coco / "captions.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"captioner evaluate: error: {results}: some image ids are not among the images of "
                   f"{coco / 'captions.json'}"]
    results.write_text(json.dumps([{"image_id": 5}]))
    assert main(["evaluate", "--results", str(results), "--annotations", str(coco / "captions.json")]) == 2
    assert "not a COCO results file" in capsys.readouterr().err


def test_image_ids_come_from_the_annotation_file_when_given(tmp_path, fast_ckpt, coco):
    renamed = tmp_path / "photos"
    random_images(renamed, 2)
    annotations = tmp_path / "a.json"
    annotations.write_text(json.dumps({"images": [{"id": 11, "file_name": "x/0000.png"},
                                                  {"id": 12, "file_name": "0001.png"}], "annotations": []}))
    out = tmp_path / "r.json"
    assert caption(fast_ckpt, renamed, "--output", out, "--format", "coco", "--coco-ids", annotations) == 0
    assert [r["image_id"] for r in json.loads(out.read_text())] == [11, 12]


@pytest.mark.parametrize("names, message", [
    (["cat.png"], "its name holds no image id"),
    (["a/12.png", "b/0012.png"], "both have image id 12"),
])
def test_inputs_without_a_unique_coco_id_are_refused_before_decoding(names, message):
    with pytest.raises(ArgumentError, match=message):
        coco_image_ids(names)


def test_tsv_output_is_what_the_command_prints_and_failures_are_left_out(tmp_path, fast_ckpt, capsys):
    random_images(tmp_path / "images", 3)
    (tmp_path / "images" / "0001.png").write_bytes(b"broken")
    out = tmp_path / "out.tsv"
    assert caption(fast_ckpt, tmp_path / "images", "--output", out, "--format", "tsv", "--method", "beam",
                   "--num-captions", "2") == 1
    printed = capsys.readouterr().out
    assert out.read_text() == printed and len(printed.splitlines()) == 4  # two images, two captions each
