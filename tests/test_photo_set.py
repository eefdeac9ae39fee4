"""The real-photo set's label list and the builder's pure parts (no network, no WordNet)."""

from __future__ import annotations

import bz2
import copy
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data_scripts"))

import build_photo_set as bps  # noqa: E402

LABELS = json.loads(bps.LABELS_FILE.read_text(encoding="utf-8"))


def test_committed_label_list_is_well_formed():
    assert bps.check_label_list(LABELS) == []
    assert len(LABELS["photos"]) >= 100


def test_each_half_has_at_least_fifty_photos_from_its_own_packages():
    halves = {split: [p for p in LABELS["photos"] if LABELS["packages"][p["package"]]["split"] == split]
              for split in bps.SPLITS}
    assert all(len(photos) >= 50 for photos in halves.values())
    dev, heldout = ({p["package"] for p in halves[split]} for split in bps.SPLITS)
    assert dev and heldout and not dev & heldout


def test_a_file_labelled_twice_is_reported():
    # the same file shipped by two packages could put one photo in both halves
    data = copy.deepcopy(LABELS)
    data["photos"][1]["sha256"] = data["photos"][0]["sha256"]
    assert sum("labelled twice" in p for p in bps.check_label_list(data)) == 2


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


@pytest.mark.parametrize("change, problem", [
    ({"split": "test"}, "split must be one of dev, heldout"),
    ({"split": None}, "split must be one of dev, heldout"),
    ({"registry": "cargo"}, "registry must be one of pypi, debian, npm"),
    ({"licence": ""}, "missing version or licence"),
])
def test_package_problems_are_reported(change, problem):
    data = copy.deepcopy(LABELS)
    data["packages"][data["photos"][0]["package"]].update(change)
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


@pytest.mark.parametrize("name, version, tarball", [
    ("uikit", "3.25.29", "uikit-3.25.29.tgz"),
    ("@stdlib/datasets-img-x", "0.2.3", "stdlib-datasets-img-x-0.2.3.tgz")])
def test_npm_tarball_names_follow_npm_pack(name, version, tarball):
    assert bps.npm_tarball_name(name, version) == tarball


def png_bytes(colour, size=(6, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def add_to_tar(archive: tarfile.TarFile, path: str, content: bytes) -> None:
    info = tarfile.TarInfo(path)
    info.size = len(content)
    archive.addfile(info, io.BytesIO(content))


def cached_packages(cache: Path, files: dict[str, dict[str, bytes]]) -> None:
    """Put a wheel ``demo-wheel 1.0`` and an npm tarball ``@demo/theme 2.0`` in the download
    cache, as the fetchers leave them, so that nothing is downloaded."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True)
    with zipfile.ZipFile(downloads / "demo_wheel-1.0-py3-none-any.whl", "w") as wheel:
        for path, content in files["demo-wheel"].items():
            wheel.writestr(path, content)
    with tarfile.open(downloads / "demo-theme-2.0.tgz", "w:gz") as tarball:
        for path, content in files["@demo/theme"].items():
            add_to_tar(tarball, path, content)


def test_npm_package_is_read_from_the_cached_tarball(tmp_path):
    cached_packages(tmp_path, {"demo-wheel": {}, "@demo/theme": {"package/img/a.png": b"abc"}})
    read, version = bps.open_package("@demo/theme", {"registry": "npm", "version": "2.0"}, tmp_path)
    assert (read("package/img/a.png"), version) == (b"abc", "2.0")
    with pytest.raises(KeyError):
        read("package/img/missing.png")


class FlatHierarchy:
    """Every synset stands alone: its one lemma is the word before the first dot."""

    def lemmas(self, synset):
        return [synset.split(".")[0]]

    def hyponyms(self, synset):
        return []

    def hypernyms(self, synset):
        return []

    def irregular_plurals(self, lemma):
        return []


def photo_entry(name, package, version, path, content, label):
    return {"name": name, "package": package, "version": version, "path": path, "label": label,
            "sha256": hashlib.sha256(content).hexdigest(), "description": f"a {name}", "licence": "MIT"}


def test_build_writes_each_half_and_the_whole_set(tmp_path):
    red, blue, green = png_bytes("red"), png_bytes("blue"), png_bytes("green")
    cached_packages(tmp_path / "cache", {
        "demo-wheel": {"demo/bowl.png": red, "demo/dog.png": blue}, "@demo/theme": {"package/cup.png": green}})
    data = {"packages": {"demo-wheel": {"registry": "pypi", "version": "1.0", "split": "dev", "licence": "MIT"},
                         "@demo/theme": {"registry": "npm", "version": "2.0", "split": "heldout",
                                         "licence": "MIT"}},
            "photos": [photo_entry("bowl", "demo-wheel", "1.0", "demo/bowl.png", red, "bowl.n.01"),
                       # labelled from another file than the one the package ships: skipped
                       photo_entry("dog", "demo-wheel", "1.0", "demo/dog.png", png_bytes("yellow"),
                                   "dog.n.01"),
                       photo_entry("cup", "@demo/theme", "2.0", "package/cup.png", green, "cup.n.01")]}
    assert bps.check_label_list(data) == []
    out = tmp_path / "out"
    manifest = bps.build(out, tmp_path / "cache", None, False, data=data, hierarchy=FlatHierarchy())

    def rows(name):
        return [json.loads(line) for line in (out / name).read_text(encoding="utf-8").splitlines()]
    dev, heldout, whole = rows("labels-dev.jsonl"), rows("labels-heldout.jsonl"), rows("labels.jsonl")
    assert [(r["image"], r["split"], r["accept"]) for r in dev] == [
        ("images/bowl.png", "dev", ["bowl", "bowls"])]
    assert [(r["image"], r["split"], r["accept"]) for r in heldout] == [
        ("images/cup.png", "heldout", ["cup", "cups"])]
    assert whole == dev + heldout
    assert manifest["skipped"] == [{"name": "dog", "reason": "file differs from the labelled one"}]
    assert manifest["files"] == {"labels-dev.jsonl": 1, "labels-heldout.jsonl": 1, "labels.jsonl": 2}
    assert manifest["splits"] == {"dev": {"photos": 1, "packages": ["demo-wheel"]},
                                  "heldout": {"photos": 1, "packages": ["@demo/theme"]}}
    assert manifest["packages"]["@demo/theme"]["split"] == "heldout"
    assert json.loads((out / "manifest.json").read_text()) == manifest
    with Image.open(out / "images" / "cup.png") as image:
        assert image.getpixel((0, 0)) == (0, 128, 0)
