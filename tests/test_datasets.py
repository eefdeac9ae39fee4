"""Every reader yields the same records; bad records are reported with their location."""

import json

import pytest

from captioner.config import DataConfig
from captioner.data.datasets import (DatasetError, hash_split, read_coco, read_dataset, read_flickr8k,
                                     read_generic, read_karpathy)
from shapes import make_shapes, write_coco, write_flickr8k, write_generic, write_karpathy


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    entries = make_shapes(root)
    return root, entries


def _summary(contents):
    return sorted((r.image_path.rsplit("/", 1)[-1], r.split, tuple(r.raw)) for r in contents.records)


def test_all_formats_give_the_same_records(shapes, tmp_path):
    root, entries = shapes
    images = root / "images"
    expected = sorted((e["name"], e["split"], tuple(e["captions"])) for e in entries)
    karpathy = read_karpathy(write_karpathy(root, entries), images)
    flickr = read_flickr8k(write_flickr8k(root, entries), images)
    jsonl, csv_path = write_generic(root, entries)
    generic_jsonl, generic_csv = read_generic(jsonl, images), read_generic(csv_path, images)
    for contents in (karpathy, flickr, generic_jsonl, generic_csv):
        assert _summary(contents) == expected
        assert contents.problems == []
    record = karpathy.records[0]
    assert record.tokens[0] == record.raw[0].split()
    # COCO has no test split in its files: train and val come from the two files
    train_file, val_file = write_coco(root, entries)
    coco = read_dataset(DataConfig(format="coco", path=str(train_file), images=str(images), val_path=str(val_file)))
    coco_expected = sorted((n, "train" if s == "train" else "val", c) for n, s, c in expected)
    assert _summary(coco) == coco_expected
    assert all(r.image_id.isdigit() for r in coco.records)


def test_missing_images_and_empty_captions_are_reported_with_their_location(shapes, tmp_path):
    root, _ = shapes
    rows = [
        {"image": "red_square_0.png", "caption": "a red square"},
        {"image": "red_square_0.png", "caption": "   "},
        {"image": "nowhere.png", "caption": "a ghost"},
        {"image": "", "caption": "no image"},
        {"image": "blue_circle_1.png", "caption": ""},
        {"image": "red_circle_0.png", "caption": "a circle", "split": "holdout"},
    ]
    path = tmp_path / "own.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    contents = read_generic(path, root / "images")
    assert [r.image_id for r in contents.records] == ["red_square_0.png"]
    assert contents.records[0].raw == ["a red square"]
    problems = [str(p) for p in contents.problems]
    assert any(p.startswith(f"{path}:2: empty caption") for p in problems)
    assert any(p.startswith(f"{path}:3: image file") and "nowhere.png not found" in p for p in problems)
    assert any(p.startswith(f"{path}:4: row has no 'image'") for p in problems)
    assert any(p.startswith(f"{path}:5: empty caption for image blue_circle_1.png") for p in problems)
    assert any(p.startswith(f"{path}:5: image blue_circle_1.png has no usable caption; skipped") for p in problems)
    assert any(p.startswith(f"{path}:6: unknown split 'holdout'") for p in problems)
    assert any(p.startswith(f"{path}:7: not valid JSON") for p in problems)
    assert len(problems) == 7


def test_karpathy_restval_and_malformed_entries(shapes, tmp_path):
    root, entries = shapes
    data = json.loads(write_karpathy(root, entries).read_text())
    data["images"][0]["split"] = "restval"
    del data["images"][1]["sentences"]
    path = tmp_path / "k.json"
    path.write_text(json.dumps(data))
    contents = read_karpathy(path, root / "images", restval="train")
    assert contents.records[0].split == "train"
    assert [str(p) for p in contents.problems] == [f"{path}: images[1]: malformed entry (missing 'sentences'); skipped"]
    dropped = read_karpathy(path, root / "images", restval="drop")
    assert len(dropped.records) == len(contents.records) - 1


def test_flickr8k_without_split_files_uses_a_stable_hash(shapes, tmp_path):
    root, entries = shapes
    token = tmp_path / "Flickr8k.token.txt"
    token.write_text("".join(f"{e['name']}#0\t{e['captions'][0]}\n" for e in entries) + "broken line\n")
    contents = read_flickr8k(token, root / "images", val_fraction=0.2, test_fraction=0.2)
    assert {r.split for r in contents.records} == {"train", "val", "test"}
    for r in contents.records:
        assert r.split == hash_split(r.image_id, 0.2, 0.2)
    problems = [str(p) for p in contents.problems]
    assert "no Flickr_8k.*Images.txt split files" in problems[0]
    assert problems[1] == f"{token}:{len(entries) + 1}: malformed line (expected 'image.jpg#n<TAB>caption'); skipped"


def test_unreadable_dataset_files_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="Karpathy split file .* not found"):
        read_karpathy(tmp_path / "missing.json", tmp_path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_karpathy(tmp_path / "bad.json", tmp_path)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DatasetError, match="not a Karpathy split file"):
        read_karpathy(tmp_path / "list.json", tmp_path)
    (tmp_path / "own.txt").write_text("x")
    with pytest.raises(DatasetError, match=".jsonl or .csv"):
        read_generic(tmp_path / "own.txt", tmp_path)
    (tmp_path / "own.csv").write_text("file,text\na.png,hi\n")
    with pytest.raises(DatasetError, match="needs columns image and caption"):
        read_generic(tmp_path / "own.csv", tmp_path)
    (tmp_path / "coco.json").write_text('{"images": 3}')
    with pytest.raises(DatasetError, match="not a COCO annotations file"):
        read_coco(tmp_path / "coco.json", tmp_path)


def test_hash_split_proportions():
    names = [f"img{i}.jpg" for i in range(4000)]
    splits = [hash_split(n, 0.1, 0.2) for n in names]
    assert abs(splits.count("test") / 4000 - 0.2) < 0.03
    assert abs(splits.count("val") / 4000 - 0.1) < 0.03


def test_caption_files_that_are_not_utf8_name_the_file_and_line(shapes, tmp_path):
    root, _ = shapes
    latin1 = "a red square on a caf\xe9 table".encode("latin-1")  # 0xe9 alone is not UTF-8; column 19 + 22
    token = tmp_path / "Flickr8k.token.txt"
    token.write_bytes(b"red_square_0.png#0\ta red square\nred_square_1.png#0\t" + latin1 + b"\n"
                      b"red_square_2.png#0\ta red square\r\n")
    contents = read_flickr8k(token, root / "images")
    assert sorted(r.image_id for r in contents.records) == ["red_square_0.png", "red_square_2.png"]
    assert contents.records[1].raw == ["a red square"]  # a Windows line end is not part of the caption
    assert f"{token}:2: not UTF-8 text (byte 0xe9 at column 41 cannot be decoded); skipped" in map(str, contents.problems)
    own = tmp_path / "own.jsonl"
    own.write_bytes(b'{"image": "red_square_0.png", "caption": "' + latin1 + b'"}\n'
                    b'{"image": "red_square_1.png", "caption": "a red square"}\n')
    contents = read_generic(own, root / "images")
    assert [r.image_id for r in contents.records] == ["red_square_1.png"]
    assert any(str(p).startswith(f"{own}:1: not UTF-8 text (byte 0xe9") for p in contents.problems)
    for name, read in [("split.json", read_karpathy), ("own.csv", read_generic), ("coco.json", read_coco)]:
        (tmp_path / name).write_bytes(b'{"images": [], "x": "' + latin1 + b'"}' if name.endswith("json")
                                      else b"image,caption\nred_square_0.png," + latin1 + b"\n")
        with pytest.raises(DatasetError, match=rf"^{tmp_path / name}: not UTF-8 text \(byte 0xe9"):
            read(tmp_path / name, root / "images")
