"""The result pages: contact sheet, attack, robustness report, visualisation, evaluation.

Known records in, what a reader must see out; then each page opened in chromium, with every
request it makes recorded (none may leave the file).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from captioner.cli import main
from captioner.report_pages import CaptionSheet, caption_entry, describe_forced, write_evaluation_page, \
    write_report_page, write_visualization_page

ROOT = Path(__file__).resolve().parent.parent

RECORD = {"path": "a<b>.jpg", "captions": [{"caption": "a cup of <coffee>", "log_prob": -1.4314, "score": -0.6401},
                                            {"caption": "a cup", "log_prob": -7.0, "score": -3.5, "truncated": True}],
          "forced": [{"words": "coffee", "source": "imagenet", "probability": 0.9426,
                      "classes": [{"label": "espresso", "probability": 0.9426}]},
                     {"words": "cup|mug", "source": "include"}]}


def test_caption_entry_shows_the_n_best_with_scores_and_what_was_forced_escaped():
    entry = caption_entry(RECORD)
    assert "<coffee>" not in entry and "a cup of &lt;coffee&gt;" in entry and "a&lt;b&gt;.jpg" in entry
    assert re.findall(r'<span class="caption">([^<]*)</span>', entry) == ["a cup of &lt;coffee&gt;", "a cup"]
    assert "score -0.6401, log p -1.4314</span>" in entry and "truncated" in entry
    assert "forced: coffee (ImageNet classifier 94%: espresso 94%)" in entry
    assert "forced: cup|mug (--include)" in entry
    error = caption_entry({"path": "x.jpg", "error": "x.jpg: empty file (0 bytes)"})
    assert '<p class="error">error: x.jpg: empty file (0 bytes)</p>' in error and "<img" not in error


def test_describe_forced_names_the_classes_that_made_it():
    assert describe_forced(RECORD["forced"][0]) == "coffee (ImageNet classifier 94%: espresso 94%)"


def test_an_interrupted_sheet_leaves_the_old_file(tmp_path):
    path = tmp_path / "sheet.html"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with CaptionSheet(path) as sheet:
            sheet.add({"path": "x.jpg", "error": "x.jpg: empty file (0 bytes)"})
            raise KeyboardInterrupt
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["sheet.html"]


class Brightness(nn.Module):
    """Class 0 ("bright") when the mean pixel is over 0.5, else 1 ("dark")."""

    categories = ["bright", "dark"]

    def forward(self, x):
        z = x.mean(dim=(1, 2, 3)) - 0.5
        return torch.stack([z, torch.zeros_like(z)], dim=1) * 10


@pytest.fixture(scope="module")
def made(tmp_path_factory, examples_dir):
    """Every kind of page, made the way the commands make them; returns {kind: (path, what it came from)}."""
    from captioner.attacks.report import robustness_report
    from captioner.attacks.session import attack_classifier
    from captioner.attacks.victims import ClassifierVictim
    from captioner.visualization import Visualization

    out = tmp_path_factory.mktemp("pages")
    broken = out / "broken.jpg"
    broken.write_bytes(b"not an image")
    small = out / "coffee.png"
    Image.open(examples_dir / "coffee.jpg").convert("RGB").resize((150, 100)).save(small)
    pages = {}

    for name in ("coffee.jpg", "cat.jpg", "rocket.jpg"):
        (out / name).write_bytes((examples_dir / name).read_bytes())
    here = os.getcwd()
    os.chdir(out)  # names as a user in that folder would give them
    try:
        code = main(["caption", "coffee.jpg", "cat.jpg", "broken.jpg", "rocket.jpg", "--num-captions", "2",
                     "--jsonl", "captions.jsonl", "--html", "sheet.html", "--quiet"])
    finally:
        os.chdir(here)
    pages["sheet"] = (out / "sheet.html", (code, [json.loads(line) for line in
                                                  (out / "captions.jsonl").read_text().splitlines()]))

    attacked = attack_classifier(small, out / "attack", eps=2 / 255)
    pages["attack"] = (Path(attacked.record["files"]["page"]), attacked.record)

    paths = []
    for name, level in (("light", 200), ("shade", 60)):
        Image.new("RGB", (12, 10), (level,) * 3).save(out / f"{name}.png")
        paths.append(str(out / f"{name}.png"))
    report = robustness_report(ClassifierVictim(Brightness()), paths, [0, 0.4], name="brightness")
    write_report_page(report, out / "report.html")
    pages["report"] = (out / "report.html", report)

    images = torch.stack([torch.full((3, 16, 16), 0.2), torch.full((3, 16, 16), 0.8)])
    records = [{"class": "espresso", "index": 967, "logit": 30.5, "probability": 0.99871, "top1": "espresso",
                "top1_probability": 0.99871},
               {"class": "tabby", "index": 281, "logit": 12.0, "probability": 0.25, "top1": "tiger cat",
                "top1_probability": 0.5}]
    write_visualization_page(Visualization(images, ["espresso", "tabby"], records, "class_logit([967, 281])"),
                             out / "visualize.html")
    pages["visualize"] = (out / "visualize.html", records)

    summary = {"split": "test", "images": 120, "checkpoint": "default",
               "systems": {"beam5": {"scores": {"BLEU-4": 6.5, "CIDEr-D": 73.8}, "notes": ["a <note>"]},
                           "nn": {"scores": {"BLEU-4": 11.0, "CIDEr-D": 75.2}}}}
    for i in range(120):
        Image.new("RGB", (4, 3), (2 * i, 0, 0)).save(out / f"img{i:03d}.png")
    per_image = [{"path": str(out / f"img{i:03d}.png"), "references": [f"ref {i}"], "captions": {"beam5": f"cap {i}", "nn": "x"},
                  "cider": {"beam5": float((i * 37) % 120), "nn": 1.0}} for i in range(120)]
    write_evaluation_page(summary, per_image, out / "evaluation.html")
    pages["evaluation"] = (out / "evaluation.html", per_image)
    return pages


def test_contact_sheet_shows_what_the_jsonl_says(made):
    path, (code, records) = made["sheet"]
    page = path.read_text()
    assert code == 1  # one image could not be read, as without --html
    bad = records[2]
    assert re.findall(r'<span class="caption">([^<]*)</span>', page) == \
        [c["caption"] for r in records if "captions" in r for c in r["captions"]]
    assert page.count('src="data:image/jpeg;base64,') == 3  # a thumbnail for each readable image only
    assert f"error: {bad['error']}" in page and "4 images, 1 could not be read" in page
    assert "forced: coffee (ImageNet classifier" in page


def test_attack_page_shows_the_three_images_and_the_verdict_of_the_record(made):
    path, record = made["attack"]
    page = path.read_text()
    assert page.count("<img ") == 3
    verdict = (f"fools the model: {'yes' if record['fooled'] else 'no'} (float image), "
               f"{'yes' if record['saved_fooled'] else 'no'} (saved 8-bit PNG)")
    assert verdict in page and f"{100 * record['before'][0]['probability']:.1f}% espresso" in page
    assert f"{100 * record['after'][0]['probability']:.1f}% {record['after'][0]['label']}" in page


def test_report_page_has_the_table_and_every_images_predictions(made):
    path, report = made["report"]
    page = path.read_text()
    # FGSM at 0.4 pushes both images across 0.5: both predictions flip
    assert [e["clean"] for e in report["per_image"]] == ["bright", "dark"]
    assert [e["102/255"] for e in report["per_image"]] == ["dark", "bright"]
    assert re.search(r"<td>light.png</td><td>bright</td><td>bright</td><td>dark</td>", re.sub(r"<img[^>]*>(<br>)?", "", page))
    assert '<td class="num">0.00</td>' in page  # agreement at 102/255


def test_visualization_page_gives_each_image_its_probability(made):
    path, records = made["visualize"]
    page = path.read_text()
    assert "espresso: p=0.9987 (logit 30.50); top-1 espresso (0.9987)" in page
    assert "tabby: p=0.2500 (logit 12.00); top-1 tiger cat (0.5000)" in page and page.count("<figure>") == 2


def test_evaluation_page_has_the_best_and_worst_fifty_in_order(made):
    path, per_image = made["evaluation"]
    page = path.read_text()
    best, worst = page.split("50 worst by CIDEr-D of beam5")
    ranked = sorted(per_image, key=lambda item: -item["cider"]["beam5"])
    assert re.findall(r"(img\d+\.png)</td>", best) == [Path(item["path"]).name for item in ranked[:50]]
    assert re.findall(r"(img\d+\.png)</td>", worst) == [Path(item["path"]).name for item in ranked[::-1][:50]]
    assert "<td class=\"num\">73.8</td>" in page and "a &lt;note&gt;" in page


@pytest.mark.slow
def test_every_page_opens_in_a_browser_without_asking_the_network(made, tmp_path):
    from browser import CHROMIUM_ARGS, Requests, chromium_path, save_screenshot, sync_playwright

    screenshots = Path(os.environ.get("CAPTIONER_SCREENSHOTS") or tmp_path)
    with sync_playwright()() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        for kind, (path, _) in made.items():
            requests = Requests(page)
            url = path.resolve().as_uri()
            page.goto(url)
            page.wait_for_load_state("load")
            assert requests.outside(url) == [], kind
            sizes = page.eval_on_selector_all("img", "images => images.map(i => i.complete && i.naturalWidth)")
            assert sizes and all(sizes), kind  # every inline image decoded
            if kind == "sheet":
                save_screenshot(page, screenshots / f"page-{kind}.png", full_page=False)
        browser.close()
