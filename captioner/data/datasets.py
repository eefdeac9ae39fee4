"""Reading captioning datasets into one record format.

Every reader returns the same :class:`CaptionRecord` objects (image path, image id,
reference captions as raw text and as tokens, split), so training and evaluation do
not care which format the data came in. Formats:

* ``karpathy``: the split files everyone reports on (``dataset_coco.json``,
  ``dataset_flickr8k.json``, ``dataset_flickr30k.json``; also the offline dataset);
* ``coco``: the official ``captions_*2014.json`` files, read through pycocotools;
* ``flickr8k``: ``Flickr8k.token.txt`` with the ``Flickr_8k.*Images.txt`` split lists;
* ``generic``: a user's own folder of images plus a ``.jsonl`` or ``.csv`` file with
  ``image`` and ``caption`` (and optionally ``split``) fields, one caption per row.

Bad records (a missing image file, an empty caption) are not dropped silently: each
becomes a :class:`DataProblem` naming where it is (file and line or entry).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .vocab import tokenize

SPLITS = ("train", "val", "test")


@dataclass
class CaptionRecord:
    image_path: str
    image_id: str
    raw: list[str]                 # reference captions as written
    tokens: list[list[str]]        # the same, tokenised
    split: str


@dataclass(frozen=True)
class DataProblem:
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


@dataclass
class DatasetContents:
    records: list[CaptionRecord] = field(default_factory=list)
    problems: list[DataProblem] = field(default_factory=list)

    def split(self, name: str) -> list[CaptionRecord]:
        return [r for r in self.records if r.split == name]


class DatasetError(UserError, ValueError):
    """The dataset cannot be read at all (missing file, wrong format)."""


class _Builder:
    """Collects captions per image, checks them, and records problems."""

    def __init__(self, images_root: str | Path):
        self.images_root = Path(images_root)
        self.entries: OrderedDict[str, dict] = OrderedDict()
        self.problems: list[DataProblem] = []

    def add(self, image_id: str, relative_path: str, caption, split: str, location: str) -> None:
        entry = self.entries.get(image_id)
        if entry is None:
            entry = self.entries[image_id] = {
                "path": str(self.images_root / relative_path), "split": split,
                "raw": [], "tokens": [], "location": location,
            }
        elif entry["split"] != split:
            self.problems.append(DataProblem(
                location, f"image {image_id} is listed in splits {entry['split']} and {split}; kept in {entry['split']}"
            ))
        text = caption.strip() if isinstance(caption, str) else ""
        tokens = tokenize(text) if text else []
        if not tokens:
            self.problems.append(DataProblem(location, f"empty caption for image {image_id}; caption skipped"))
            return
        entry["raw"].append(text)
        entry["tokens"].append(tokens)

    def add_tokens(self, image_id: str, relative_path: str, raw: str, tokens: list[str], split: str,
                   location: str) -> None:
        """Like :meth:`add` for formats that ship their own tokens (Karpathy)."""
        if not raw.strip() and tokens:
            raw = " ".join(tokens)
        self.add(image_id, relative_path, raw, split, location)

    def finish(self, check_files: bool = True) -> DatasetContents:
        contents = DatasetContents(problems=list(self.problems))
        for image_id, entry in self.entries.items():
            if not entry["raw"]:
                contents.problems.append(DataProblem(entry["location"], f"image {image_id} has no usable caption; skipped"))
                continue
            if check_files and not os.path.isfile(entry["path"]):
                contents.problems.append(DataProblem(entry["location"], f"image file {entry['path']} not found; skipped"))
                continue
            contents.records.append(CaptionRecord(entry["path"], image_id, entry["raw"], entry["tokens"], entry["split"]))
        return contents


def _require(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not str(path) or not path.is_file():
        raise DatasetError(f"{what} {path} not found")
    return path


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from None


def _not_utf8(path, error: UnicodeDecodeError) -> "DatasetError":
    return DatasetError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} cannot be decoded); "
                        "save the file as UTF-8")


def _lines(path: Path):
    """``(number, line)`` for each line of a text file; ``line`` is a UnicodeDecodeError for a
    line that is not UTF-8, so the reader can report that line and keep the others."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                yield number, raw.decode("utf-8").replace("\r\n", "\n")
            except UnicodeDecodeError as error:
                yield number, error


def _not_utf8_line(error: UnicodeDecodeError) -> str:
    return (f"not UTF-8 text (byte {error.object[error.start]:#04x} at column {error.start + 1} cannot be "
            "decoded); skipped")


def hash_split(name: str, val_fraction: float, test_fraction: float) -> str:
    """A stable split for an image name: the same name always lands in the same split."""
    value = int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    if value < test_fraction:
        return "test"
    if value < test_fraction + val_fraction:
        return "val"
    return "train"


def read_karpathy(path: str | Path, images: str | Path, restval: str = "train",
                  check_files: bool = True) -> DatasetContents:
    path = _require(path, "Karpathy split file")
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: not a Karpathy split file (expected a dict with an 'images' list)")
    builder = _Builder(images)
    for i, image in enumerate(data["images"]):
        location = f"{path}: images[{i}]"
        try:
            filename = image["filename"]
            split = image["split"]
            sentences = image["sentences"]
        except (KeyError, TypeError) as error:
            builder.problems.append(DataProblem(location, f"malformed entry (missing {error}); skipped"))
            continue
        if split == "restval":
            if restval == "drop":
                continue
            split = restval
        if split not in SPLITS:
            builder.problems.append(DataProblem(location, f"unknown split {split!r}; skipped"))
            continue
        relative = os.path.join(image.get("filepath", "") or "", filename)
        image_id = str(image.get("cocoid", image.get("imgid", filename)))
        if not sentences:
            builder.add(image_id, relative, "", split, location)
        for sentence in sentences:
            builder.add_tokens(image_id, relative, sentence.get("raw", ""), sentence.get("tokens", []), split, location)
    return builder.finish(check_files)


def read_coco(path: str | Path, images: str | Path, split: str = "train",
              check_files: bool = True) -> DatasetContents:
    """An official COCO captions file (``captions_train2014.json``), through pycocotools."""
    from pycocotools.coco import COCO

    path = _require(path, "COCO captions file")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        try:
            coco = COCO(str(path))
        except UnicodeDecodeError as error:
            raise _not_utf8(path, error) from None
        except (KeyError, TypeError, json.JSONDecodeError, AssertionError) as error:
            raise DatasetError(f"{path}: not a COCO annotations file ({error})") from None
    builder = _Builder(images)
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        annotations = coco.imgToAnns.get(image_id, [])
        location = f"{path}: image id {image_id}"
        if not annotations:
            builder.add(str(image_id), info["file_name"], "", split, location)
        for ann in annotations:
            builder.add(str(image_id), info["file_name"], ann.get("caption", ""), split, f"{path}: annotation id {ann.get('id')}")
    return builder.finish(check_files)


def read_flickr8k(path: str | Path, images: str | Path, val_fraction: float = 0.05,
                  test_fraction: float = 0.05, check_files: bool = True) -> DatasetContents:
    """``Flickr8k.token.txt`` (``name.jpg#n<TAB>caption`` lines); splits from the
    ``Flickr_8k.{train,dev,test}Images.txt`` files beside it, else by name hash."""
    path = _require(path, "Flickr8k token file")
    split_of: dict[str, str] = {}
    problems = []
    for split, listing in (("train", "trainImages"), ("val", "devImages"), ("test", "testImages")):
        list_file = path.parent / f"Flickr_8k.{listing}.txt"
        if list_file.is_file():
            try:
                names = list_file.read_text(encoding="utf-8").split()
            except UnicodeDecodeError as error:
                raise _not_utf8(list_file, error) from None
            split_of.update((name, split) for name in names)
    if not split_of:
        problems.append(DataProblem(str(path), "no Flickr_8k.*Images.txt split files beside it; splits assigned by name hash"))
    builder = _Builder(images)
    builder.problems.extend(problems)
    for number, line in _lines(path):
        location = f"{path}:{number}"
        if isinstance(line, UnicodeDecodeError):
            builder.problems.append(DataProblem(location, _not_utf8_line(line)))
            continue
        if not line.strip():
            continue
        key, tab, caption = line.rstrip("\n").partition("\t")
        name = key.split("#")[0]
        if not tab or not name:
            builder.problems.append(DataProblem(location, "malformed line (expected 'image.jpg#n<TAB>caption'); skipped"))
            continue
        if split_of:
            if name not in split_of:
                continue  # Flickr8k.token.txt lists a few images that are in no official split
            split = split_of[name]
        else:
            split = hash_split(name, val_fraction, test_fraction)
        builder.add(name, name, caption, split, location)
    return builder.finish(check_files)


def read_generic(path: str | Path, images: str | Path, val_fraction: float = 0.05,
                 test_fraction: float = 0.05, check_files: bool = True) -> DatasetContents:
    """A user's own data: ``.jsonl`` or ``.csv`` rows with ``image`` and ``caption`` (and
    optionally ``split``); several rows may name the same image."""
    path = _require(path, "captions file")
    builder = _Builder(images)
    for location, row in _rows(path):
        if "_problem" in row:
            builder.problems.append(DataProblem(location, row["_problem"]))
            continue
        image = str(row.get("image") or "").strip()
        if not image:
            builder.problems.append(DataProblem(location, "row has no 'image' value; skipped"))
            continue
        split = str(row.get("split") or "").strip() or hash_split(image, val_fraction, test_fraction)
        if split not in SPLITS:
            builder.problems.append(DataProblem(location, f"unknown split {split!r} (use train, val or test); skipped"))
            continue
        builder.add(image, image, row.get("caption"), split, location)
    return builder.finish(check_files)


def _rows(path: Path):
    if path.suffix.lower() == ".jsonl":
        for number, line in _lines(path):
            if isinstance(line, UnicodeDecodeError):
                yield f"{path}:{number}", {"_problem": _not_utf8_line(line)}
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield f"{path}:{number}", {"_problem": f"not valid JSON ({error}); skipped"}
                continue
            yield f"{path}:{number}", row if isinstance(row, dict) else {"_problem": "not valid JSON (a row must be an object); skipped"}
    elif path.suffix.lower() == ".csv":
        try:
            with open(path, encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                missing = {"image", "caption"} - set(reader.fieldnames or [])
                if missing:
                    raise DatasetError(f"{path}: CSV header needs columns image and caption (missing {sorted(missing)})")
                rows = [(f"{path}:{number}", row) for number, row in enumerate(reader, 2)]
        except UnicodeDecodeError as error:
            raise _not_utf8(path, error) from None
        yield from rows
    else:
        raise DatasetError(f"{path}: own data must be a .jsonl or .csv file with image and caption fields")


def read_dataset(config, check_files: bool = True) -> DatasetContents:
    """Read the dataset a :class:`captioner.config.DataConfig` describes."""
    fmt = config.format
    if fmt == "karpathy":
        return read_karpathy(config.path, config.images, config.restval, check_files)
    if fmt == "flickr8k":
        return read_flickr8k(config.path, config.images, config.val_fraction, config.test_fraction, check_files)
    if fmt == "generic":
        return read_generic(config.path, config.images, config.val_fraction, config.test_fraction, check_files)
    if fmt == "coco":
        contents = read_coco(config.path, config.images, "train", check_files)
        if config.val_path:
            val = read_coco(config.val_path, config.val_images or config.images, "val", check_files)
            contents.records.extend(val.records)
            contents.problems.extend(val.problems)
        return contents
    raise DatasetError(f"unknown data format {fmt!r}")
