"""The offline dataset builder (data_scripts/build_offline_dataset.py) on small fake source trees.

The trees are written here (Tux Paint stamps, an OpenMoji package, Openclipart SVGs), so the
tests need none of the real Debian or npm packages.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data_scripts"))
import build_offline_dataset as builder  # noqa: E402

from captioner.data.vocab import tokenize  # noqa: E402

SIZE = 48
IMAGE_KEYS = {"imgid", "filepath", "filename", "split", "sentids", "sentences", "source", "group", "kind",
              "original", "rgba"}
SENTENCE_KEYS = {"raw", "tokens", "imgid", "sentid"}


def flat_png(path: Path, size=(60, 40), colour=(200, 30, 30)) -> None:
    """A drawing-like stamp: one flat colour on a transparent border."""
    image = Image.new("RGBA", (size[0] + 10, size[1] + 10), (0, 0, 0, 0))
    image.paste(Image.new("RGBA", size, colour + (255,)), (5, 5))
    image.save(path)


def noisy_png(path: Path, side=64) -> None:
    """A photo-like stamp: no two neighbouring pixels share a colour."""
    rng = np.random.default_rng(0)
    pixels = np.dstack([rng.integers(0, 256, (side, side, 3)), np.full((side, side), 255)]).astype(np.uint8)
    Image.fromarray(pixels, "RGBA").save(path)


def svg(body: str = '<circle cx="36" cy="36" r="20" fill="#3a7"/>', metadata: str = "", view: int = 72) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            f'xmlns:cc="http://web.resource.org/cc/" '
            f'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" width="{view}" height="{view}" '
            f'viewBox="0 0 {view} {view}"><metadata>{metadata}</metadata>{body}</svg>')


def clipart(title: str, author: str = "Jane Doe", description: str = "") -> str:
    return svg(metadata=f'<rdf:RDF><cc:Work rdf:about=""><dc:title>{title}</dc:title>'
                        f'<dc:description>{description}</dc:description>'
                        f'<dc:creator><cc:Agent><dc:title>{author}</dc:title></cc:Agent></dc:creator>'
                        f'</cc:Work></rdf:RDF>')


def make_tuxpaint(root: Path) -> Path:
    stamps = root / "stamps"
    (stamps / "vehicles").mkdir(parents=True)
    (stamps / "animals").mkdir()
    flat_png(stamps / "vehicles" / "dump_truck.png")
    flat_png(stamps / "vehicles" / "dump_truck_mirror.png")
    (stamps / "vehicles" / "dump_truck.txt").write_text("A huge dump truck.\nde.utf8=Ein riesiger Kipper.\n")
    noisy_png(stamps / "animals" / "flower.png")
    (stamps / "animals" / "flower.txt").write_text("A flower.\n")
    (stamps / "animals" / "giraffe.svg").write_text(svg())
    (stamps / "animals" / "giraffe.txt").write_text("A giraffe.\nfr.utf8=Une girafe.\n")
    flat_png(stamps / "animals" / "giraffe-2.png", colour=(220, 180, 40))
    (stamps / "animals" / "giraffe-2.txt").write_text("A tall giraffe eating leaves.\n")
    (stamps / "animals" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (stamps / "animals" / "broken.txt").write_text("A broken stamp.\n")
    (stamps / "animals" / "gift.txt").write_text("A gift without a picture.\n")
    return stamps


def make_openmoji(root: Path) -> Path:
    package = root / "package"
    (package / "data").mkdir(parents=True)
    (package / "color" / "svg").mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"name": "openmoji", "version": "17.0.0"}))

    def emoji(hexcode, annotation, group="animals-nature", subgroups="animal-mammal", tone="", base=""):
        (package / "color" / "svg" / f"{hexcode}.svg").write_text(svg())
        return {"hexcode": hexcode, "annotation": annotation, "group": group, "subgroups": subgroups,
                "skintone": tone, "skintone_base_hexcode": base, "tags": "", "openmoji_tags": ""}

    emojis = [emoji("1F436", "dog face"),
              emoji("1F44B", "waving hand", "people-body", "hand-fingers-open", "", "1F44B"),
              emoji("1F44B-1F3FB", "waving hand: light skin tone", "people-body", "hand-fingers-open", 1, "1F44B"),
              emoji("1F1E9-1F1EA", "flag: Germany", "flags", "country-flag"),
              emoji("0031-FE0F-20E3", "keycap: 1", "symbols", "keycap"),
              emoji("E0C1", "maultasche", "extras-openmoji", "food-drink")]
    (package / "data" / "openmoji.json").write_text(json.dumps(emojis))
    return root


def make_openclipart(root: Path) -> Path:
    svgs = root / "svg"
    for folder in ("animals", "shapes/stars", "signs_and_symbols/flags/africa"):
        (svgs / folder).mkdir(parents=True)
    (svgs / "animals" / "bat_orlando_01.svg").write_text(clipart("Bat", description="A flying bat."))
    (svgs / "animals" / "giraffe_01.svg").write_text(clipart("A giraffe"))
    (svgs / "animals" / "gatto_architetto_01.svg").write_text(clipart("Gatto nero"))
    (svgs / "animals" / "arrow-down.svg").write_text(clipart("arrow-down-seagreen"))
    (svgs / "animals" / "self_portrait.svg").write_text(clipart("Orlando Karam", author="Orlando Karam"))
    (svgs / "animals" / "untitled.svg").write_text(clipart("Untitled"))
    (svgs / "signs_and_symbols" / "flags" / "africa" / "benin.svg").write_text(clipart("benin"))
    for i in range(13):
        (svgs / "shapes" / "stars" / f"star_{i}.svg").write_text(clipart("gramastar"))
    os.symlink("bat_orlando_01.svg", svgs / "animals" / "bat_copy.svg")
    return svgs


@pytest.fixture(scope="module")
def fake_roots(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {"tuxpaint": make_tuxpaint(root / "tuxpaint"), "openmoji": make_openmoji(root / "openmoji"),
            "openclipart": make_openclipart(root / "openclipart")}


@pytest.fixture(scope="module")
def built(fake_roots, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    info = builder.build(out, fake_roots, seed=0, size=SIZE, workers=2)
    dataset = json.loads((out / "dataset_offline.json").read_text())
    return out, dataset, info


def by_caption(dataset) -> dict[str, list[dict]]:
    found = defaultdict(list)
    for image in dataset["images"]:
        for sentence in image["sentences"]:
            found[sentence["raw"]].append(image)
    return found


@pytest.mark.parametrize("raw, expected", [
    ("A huge dump truck.", "a huge dump truck"),
    ("Cello (B and W)", "cello"),
    ("  Magnifying   Glass 4 ", "magnifying glass"),
    ("Pumpkin2", "pumpkin"),
    ("M16", "m16"),
    ("A knight’s helmet.", "a knight's helmet"),
    ("Venus—the second planet—and the most inhospitable!", "venus, the second planet, and the most inhospitable"),
    ("Knight. The only piece that can jump over others.", "knight"),
    ("A calculator.  6x7=42", "a calculator"),
    ("A “Fuji” apple.", "a fuji apple"),
    ("This is a vectorized bullet hole.", "a vectorized bullet hole"),
    ("Hat - clothing", "hat, clothing"),
    # more than eight words: the first clause, when that is short enough
    ("Saturn, the second largest planet in our solar system, and the one with the most rings", "saturn"),
    ("A pair of praying hands, black and white, with a rosary", "a pair of praying hands"),
    ("The sign for the letter x in American sign language", "the sign for the letter x in american sign language"),
])
def test_normalise_caption(raw, expected):
    assert builder.normalise_caption(raw) == expected


@pytest.mark.parametrize("text, strict, reason", [
    ("2004", False, "no letters (numbers or symbols only)"),
    ("jigsaw_red_10", False, "file-name-like"),
    ("contact me at jane@example.org", False, "url or e-mail"),
    ("untitled", True, "placeholder (untitled, drawing, ...)"),
    ("arrow-down-seagreen", True, "file-name-like"),
    ("part of the flat icon collection", True, "collection, theme or tool name"),
    ("gatto nero", True, "not English (word list)"),
    ("chaussée glissante", True, "not English (accented letters)"),
    ("ms", True, "fewer than 3 letters"),
    ("yo-yo", False, None),
    ("flag of sierra leone", False, None),
    ("ox", False, None),
    ("a giraffe", True, None),
    # what the decoder learned word for word and wrote about photos it did not know
    ("a candy cane is a traditional christmas treat in the united states", False,
     "a fact or history, not a description"),
    ("a mince pie is a traditional christmas food in the uk", False, "a fact or history, not a description"),
    ("the wright flyer first flew in 1903", False, "a fact or history, not a description"),
    ("a nice detailed image of clouds", False, "an opinion, not a description"),
    ("a fast apc like this stryker, you can surprise the enemy", False, "an instruction or a note to the reader"),
    ("5 basic moon phases, easily changed to be more specific", False, "an instruction or a note to the reader"),
    ("holly leaves are shiny and have prickles", False, "a statement, not a description"),
    ("this shell is hundreds of years old", False, "a statement, not a description"),
    ("hei stands for halb or half", False, "a statement, not a description"),
    ("we remember those who have died", False, "a statement, not a description"),
    ("fat man, atomic bomb dropped on nagasaki", False, "a fact or history, not a description"),
    ("the sign for the letter x in american sign language", False, "longer than 8 words"),
    ("a huge dump truck", False, None),
    ("a cat is sleeping on a mat", False, None),
    ("a cup of coffee", False, None),
    ("the letter i", False, None),
])
def test_caption_problem(text, strict, reason):
    assert builder.caption_problem(text, text, strict) == reason


def test_karpathy_layout(built):
    out, dataset, _ = built
    assert set(dataset) == {"dataset", "images"} and dataset["dataset"] == "offline"
    sentids = []
    for index, image in enumerate(dataset["images"]):
        assert set(image) == IMAGE_KEYS
        assert image["imgid"] == index and image["split"] in ("train", "val", "test")
        assert image["sentids"] == [s["sentid"] for s in image["sentences"]]
        for sentence in image["sentences"]:
            assert set(sentence) == SENTENCE_KEYS and sentence["imgid"] == index
            assert sentence["tokens"] == tokenize(sentence["raw"])
        sentids += image["sentids"]
        with Image.open(out / "images" / image["filepath"] / image["filename"]) as rgb:
            assert rgb.mode == "RGB" and rgb.size == (SIZE, SIZE)
            assert min(rgb.getpixel((0, 0))) >= 245  # white, give or take JPEG noise
        with Image.open(out / "rgba" / image["rgba"]) as rgba:
            assert rgba.mode == "RGBA" and rgba.size == (SIZE, SIZE)
            assert rgba.getpixel((0, 0))[3] == 0 and rgba.getpixel((SIZE // 2, SIZE // 2))[3] == 255
    assert sentids == list(range(len(sentids)))


def test_tuxpaint_stamps(built):
    _, dataset, info = built
    stamps = {i["filename"]: i for i in dataset["images"] if i["source"] == "tuxpaint"}
    assert set(stamps) == {"vehicles__dump_truck.jpg", "animals__flower.jpg", "animals__giraffe.jpg",
                           "animals__giraffe-2.jpg"}
    truck = stamps["vehicles__dump_truck.jpg"]
    assert [s["raw"] for s in truck["sentences"]] == ["a huge dump truck"]
    assert truck["kind"] == "drawing" and truck["original"].endswith("vehicles/dump_truck.png")
    assert stamps["animals__flower.jpg"]["kind"] == "photo"
    assert stamps["animals__giraffe.jpg"]["kind"] == "drawing"
    assert stamps["animals__giraffe.jpg"]["group"] == stamps["animals__giraffe-2.jpg"]["group"]
    filters = info["filters"]["tuxpaint"]
    assert filters["pre-mirrored copy (NAME_mirror)"] == 1 and filters["caption file without an image"] == 1


def test_broken_file_is_reported_and_skipped(built):
    _, dataset, info = built
    assert [s["file"].endswith("animals/broken.png") for s in info["skipped"]] == [True]
    assert info["skipped"][0]["reason"].startswith("UnidentifiedImageError: cannot identify image file")
    assert "a broken stamp" not in by_caption(dataset)


def test_openmoji(built):
    _, dataset, info = built
    emojis = {i["filename"]: [s["raw"] for s in i["sentences"]] for i in dataset["images"] if i["source"] == "openmoji"}
    assert emojis == {"1F436.jpg": ["dog face"], "1F44B.jpg": ["waving hand"], "1F1E9-1F1EA.jpg": ["flag of germany"]}
    filters = info["filters"]["openmoji"]
    assert filters["skin-tone variant"] == 1 and filters["letters, digits or text"] == 1
    assert filters["not English (word list)"] == 1


def test_skin_tone_variants_share_the_split_of_their_base(fake_roots, tmp_path):
    for seed in range(3):
        builder.build(tmp_path / str(seed), {"openmoji": fake_roots["openmoji"]}, seed=seed, size=SIZE, workers=1,
                      skin_tones=True)
        images = json.loads((tmp_path / str(seed) / "dataset_offline.json").read_text())["images"]
        hands = [i for i in images if i["filename"].startswith("1F44B")]
        assert len(hands) == 2 and len({i["group"] for i in hands}) == 1 and len({i["split"] for i in hands}) == 1
        assert hands[1]["sentences"][0]["raw"] == "waving hand, light skin tone"


def test_openclipart_filters(built):
    _, dataset, info = built
    titles = {i["filename"]: [s["raw"] for s in i["sentences"]] for i in dataset["images"] if i["source"] == "openclipart"}
    assert titles == {"animals__bat_orlando_01.jpg": ["bat", "a flying bat"], "animals__giraffe_01.jpg": ["a giraffe"]}
    filters = info["filters"]["openclipart"]
    assert filters == {
        "picture left without a caption": 18, "title or description shared by more than 12 files": 13,
        "symbolic link to another file": 1, "not English (word list)": 1, "file-name-like": 1,
        "author's name": 1, "placeholder (untitled, drawing, ...)": 1, "flag titled by its place name only": 1}


def test_identical_captions_never_straddle_splits(built):
    _, dataset, _ = built
    giraffes = by_caption(dataset)["a giraffe"]
    assert {i["source"] for i in giraffes} == {"tuxpaint", "openclipart"}
    for images in by_caption(dataset).values():
        assert len({i["split"] for i in images}) == 1 and len({i["group"] for i in images}) == 1


def test_manifest(built):
    out, dataset, info = built
    assert json.loads((out / "manifest.json").read_text()) == info
    assert info["images"] == len(dataset["images"]) == 9
    assert info["captions"] == sum(len(i["sentences"]) for i in dataset["images"]) == 10
    assert sum(info["splits"].values()) == 9 and info["seed"] == 0 and info["size"] == SIZE
    assert {s: v["images"] for s, v in info["sources"].items()} == {"tuxpaint": 4, "openmoji": 3, "openclipart": 2}
    assert info["sources"]["tuxpaint"]["licence"] == "GPL-2.0-or-later"
    assert info["sources"]["openmoji"]["licence"] == "CC-BY-SA-4.0"
    assert info["sources"]["openmoji"]["version"] == "17.0.0"
    assert info["sources"]["openclipart"]["licence"].startswith("public domain")
    assert "redistribute" in info["notice"] and "CC BY-SA 4.0" in info["notice"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_splits_are_about_80_10_10_per_source_and_reproducible():
    items = [builder.Item("a" if i % 3 else "b", f"x{i}", f"x{i}", "clipart", [f"caption {i // 2}"])
             for i in range(3000)]
    groups = builder.group_items(items)
    assert len(set(groups)) == 1500
    chosen = builder.assign_splits(items, groups, seed=7)
    assert chosen == builder.assign_splits(items, groups, seed=7)
    assert chosen != builder.assign_splits(items, groups, seed=8)
    for source in ("a", "b"):
        splits = [chosen[g] for item, g in zip(items, groups) if item.source == source]
        for split, share in builder.SPLITS.items():
            assert abs(splits.count(split) / len(splits) - share) < 0.01


@pytest.mark.parametrize("source, package", [("tuxpaint", "tuxpaint-stamps-default"),
                                             ("openmoji", "openmoji@17.0.0"),
                                             ("openclipart", "openclipart-svg")])
def test_missing_source_names_the_package(tmp_path, capsys, source, package):
    code = builder.main(["--out", str(tmp_path / "out"), "--sources", source,
                         f"--{source}-dir", str(tmp_path / "nowhere")])
    message = capsys.readouterr().err
    assert code == 1
    assert f"package {package} is not installed" in message and "install_offline_sources.sh" in message
    assert not (tmp_path / "out" / "dataset_offline.json").exists()


def test_unknown_source_is_an_argument_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        builder.main(["--out", str(tmp_path), "--sources", "tuxpaint,flickr"])
    assert exit_info.value.code == 2


def test_illustrator_entities_are_expanded(tmp_path):
    path = tmp_path / "loaf.svg"
    path.write_text('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY ns_svg "http://www.w3.org/2000/svg">]>'
                    '<svg xmlns="&ns_svg;" width="72" height="72"><rect x="10" y="20" width="50" height="30" '
                    'fill="#a60"/></svg>')
    original, error = builder.render_item((str(path), str(tmp_path / "a.jpg"), str(tmp_path / "a.png"), SIZE))
    assert error is None
    with Image.open(tmp_path / "a.png") as rgba:
        assert rgba.getchannel("A").getbbox() is not None


def test_square_canvas_keeps_aspect_and_margin():
    canvas = builder.square_canvas(Image.new("RGBA", (200, 100), (0, 0, 255, 255)), 100, margin=0.1)
    assert canvas.size == (100, 100)
    assert canvas.getchannel("A").getbbox() == (10, 30, 90, 70)


# -- data_scripts/composite_views.py ---------------------------------------------------------------------------
RED = (220, 30, 30)


def _offline_dir(tmp_path):
    """A built offline dataset in miniature: a train record with a cut-out, one without, a val one with."""
    (tmp_path / "rgba").mkdir()
    cutout = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    cutout.paste(Image.new("RGBA", (20, 20), (*RED, 255)), (10, 10))  # an opaque square in clear space
    cutout.save(tmp_path / "rgba" / "square.png")
    cutout.save(tmp_path / "rgba" / "val_square.png")

    def record(imgid, name, split, rgba=None):
        return {"imgid": imgid, "filepath": "", "filename": name, "split": split, "kind": "stamp", "group": name,
                "sentences": [{"raw": f"caption {imgid}", "tokens": ["caption", str(imgid)], "imgid": imgid,
                               "sentid": 10 * imgid}], "sentids": [10 * imgid], **({"rgba": rgba} if rgba else {})}

    images = [record(1, "square.png", "train", "square.png"), record(2, "plain.png", "train"),
              record(5, "val_square.png", "val", "val_square.png")]
    (tmp_path / "dataset_offline.json").write_text(json.dumps({"dataset": "offline", "images": images}))
    return images


def test_composite_views_adds_training_images_of_the_cut_outs(tmp_path, capsys):
    import composite_views

    originals = _offline_dir(tmp_path)
    assert composite_views.main(["--data", str(tmp_path), "--per-image", "2", "--seed", "0", "--size", "64"]) == 0
    data = json.loads((tmp_path / "dataset_offline_composite.json").read_text())
    assert data["images"][:3] == originals  # the originals unchanged, val and test untouched
    added = data["images"][3:]
    assert [(r["imgid"], r["filename"], r["filepath"], r["split"], r["kind"]) for r in added] == [
        (6, "square__c0.jpg", "composite", "train", "stamp-composite"),
        (7, "square__c1.jpg", "composite", "train", "stamp-composite"),
    ]
    assert [[s["raw"] for s in r["sentences"]] for r in added] == [["caption 1"], ["caption 1"]]
    assert [r["sentids"] for r in added] == [[51], [52]]  # new, unique sentence ids
    assert data["composites"] == {"per_image": 2, "seed": 0, "added": 2, "skipped": 0}
    for r in added:
        image = Image.open(tmp_path / "images" / "composite" / r["filename"])
        assert image.size == (64, 64) and image.mode == "RGB"
        pixels = np.asarray(image, dtype=int)
        red = (np.abs(pixels - RED) < 60).all(axis=2)
        # the square is scaled to 35-95% of the side (22 to 61 px): at least its inside, 2 px in
        # from the edges that blur and JPEG soften, stays red
        assert red.sum() >= (22 - 4) ** 2
    assert "2 composites of 1 training images" in capsys.readouterr().out


def test_composite_views_without_the_dataset_says_how_to_build_it(tmp_path, capsys):
    import composite_views

    assert composite_views.main(["--data", str(tmp_path)]) == 1
    assert "make offline-data" in capsys.readouterr().err
