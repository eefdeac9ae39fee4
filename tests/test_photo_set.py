"""The real-photo set's label list and the builder's pure parts (no network, no WordNet)."""

from __future__ import annotations

import bz2
import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data_scripts"))

import build_photo_set as bps  # noqa: E402

LABELS = json.loads(bps.LABELS_FILE.read_text(encoding="utf-8"))


def test_committed_label_list_is_well_formed():
    assert bps.check_label_list(LABELS) == []
    assert len(LABELS["photos"]) >= 50


def test_every_photo_has_source_path_synset_and_licence():
    for photo in LABELS["photos"]:
        assert photo["package"] in LABELS["packages"]
        assert photo["path"] and not photo["path"].startswith("/")
        assert bps.SYNSET.match(photo["label"]), photo["label"]
        assert photo["licence"].strip() and photo["description"].strip()


def test_no_committed_or_listed_image_has_a_forbidden_licence():
    assert not [p["name"] for p in LABELS["photos"] if bps.FORBIDDEN_LICENCE.search(p["licence"])]
    images = [p for p in (bps.PROJECT / "data_scripts").rglob("*")
              if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".webp")]
    assert images == []  # the builder fetches photos on the user's machine; none are committed


@pytest.mark.parametrize("licence", ["GPL-2.0-or-later", "AGPL-3.0", "CC BY-SA 4.0", "CC-BY-SA-4.0",
                                     "CC-BY-NC-SA-2.0", "CeCILL"])
def test_forbidden_licences_are_caught(licence):
    data = copy.deepcopy(LABELS)
    data["photos"][0]["licence"] = licence
    assert any("does not allow" in p for p in bps.check_label_list(data))


@pytest.mark.parametrize("licence", ["CC0-1.0", "CC-BY-2.0", "public domain (NASA)", "MIT", "Apache-2.0"])
def test_allowed_licences_pass(licence):
    assert not bps.FORBIDDEN_LICENCE.search(licence)


@pytest.mark.parametrize("change, problem", [
    ({"label": "cat"}, "not a noun synset name"),
    ({"label": "run.v.01"}, "not a noun synset name"),
    ({"licence": ""}, "missing licence"),
    ({"package": "nowhere"}, "not in 'packages'"),
    ({"version": "0.0.1"}, "differs from the package's"),
    ({"sha256": "abc"}, "not 64 hex digits"),
    ({"name": "Bad Name"}, "lower-case letters"),
])
def test_label_list_problems_are_reported(change, problem):
    data = copy.deepcopy(LABELS)
    data["photos"][0].update(change)
    problems = bps.check_label_list(data)
    assert len(problems) == 1 and problem in problems[0]


def test_duplicate_names_are_reported():
    data = copy.deepcopy(LABELS)
    data["photos"][1]["name"] = data["photos"][0]["name"]
    assert sum("name used twice" in p for p in bps.check_label_list(data)) == 2


@pytest.mark.parametrize("size, fitted", [
    ((512, 512), (512, 512)), ((1024, 300), (1024, 300)), ((2048, 1024), (1024, 512)),
    ((1282, 1110), (1024, 887)), ((300, 3000), (102, 1024)), ((5000, 1), (1024, 1))])
def test_fit_size_caps_the_long_side_and_keeps_the_aspect_ratio(size, fitted):
    assert bps.fit_size(size) == fitted
    w, h = bps.fit_size(size)
    if min(size) > 10:
        assert abs(w / h - size[0] / size[1]) < 0.01 * size[0] / size[1]


def test_save_downsizes_large_images(tmp_path):
    bps.save(Image.new("RGB", (2000, 1500), "red"), tmp_path / "big.jpg")
    bps.save(Image.new("RGB", (40, 30), "red"), tmp_path / "small.png")
    with Image.open(tmp_path / "big.jpg") as big, Image.open(tmp_path / "small.png") as small:
        assert (big.format, big.size) == ("JPEG", (1024, 768))
        assert (small.format, small.size) == ("PNG", (40, 30))


def test_output_names_keep_jpeg_and_turn_the_rest_into_png():
    assert bps.output_name({"name": "cat", "path": "x/chelsea.png"}) == "images/cat.png"
    assert bps.output_name({"name": "rocket", "path": "x/rocket.JPG"}) == "images/rocket.jpg"
    assert bps.output_name({"name": "raccoon", "path": "scipy/misc/face.dat"}) == "images/raccoon.png"


def test_decode_flattens_transparency_on_white_and_reads_raw_arrays():
    buffer = io.BytesIO()
    Image.new("RGBA", (2, 1), (255, 0, 0, 0)).save(buffer, format="PNG")
    assert bps.decode(buffer.getvalue(), {"name": "t"}).getpixel((0, 0)) == (255, 255, 255)
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    raw = {"name": "r", "raw": {"compression": "bz2", "shape": [2, 3, 3]}}
    image = bps.decode(bz2.compress(pixels.tobytes()), raw)
    assert image.size == (3, 2) and np.array_equal(np.asarray(image), pixels)


def test_missing_wordnet_is_one_line_saying_how_to_get_it(tmp_path):
    result = subprocess.run([sys.executable, str(bps.PROJECT / "data_scripts" / "build_photo_set.py"),
                             "--nltk-data", str(tmp_path / "empty"), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=bps.PROJECT,
                            env={"PYTHONPATH": str(bps.PROJECT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"WordNet is not in {tmp_path / 'empty'}" in result.stderr
    assert "install_wordnet.sh" in result.stderr
    assert not (tmp_path / "out").exists()
