"""What ``captioner caption`` writes: the JSON records as lines, ``path<TAB>caption`` lines, or the
results file of the COCO caption evaluation.

* ``jsonl``: one :meth:`captioner.api.CaptionResult.to_dict` record per image, failures included;
* ``tsv``: ``path<TAB>caption`` per caption, best first (what the command prints; a backslash,
  tab or newline in a path is escaped, see :func:`captioner.data.images.printable_path`);
* ``coco``: ``[{"image_id": int, "caption": str}]``, the best caption of each captioned image, the
  file that coco-caption's ``COCO.loadRes`` reads. The image ids come from a COCO annotation file
  (``images[].id`` by ``file_name``) or from the number in the file's name, as COCO's own names
  carry it (``COCO_val2014_000000391895.jpg`` is image 391895).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence

from .data.images import printable_path
from .errors import ArgumentError, UserError
from .fileio import atomic_write, write_json_atomic

FORMATS = ("jsonl", "coco", "tsv")


def tsv_lines(record: dict) -> list[str]:
    """The ``path<TAB>caption`` lines of one record (none for a failed image)."""
    return [f"{printable_path(record['path'])}\t{c['caption']}" for c in record.get("captions", [])]


def image_name(path: str) -> str:
    """The file name an input is known by in a COCO annotation file (a tar member's own name)."""
    return os.path.basename(getattr(path, "name", "") or str(path))


def coco_image_ids(paths: Sequence[str], annotations: str | None = None) -> dict[str, int]:
    """Each input's COCO image id, from ``annotations`` (a COCO annotation file) when given, else
    from the last number in its file name. An input without one, or two inputs with one id, is an
    :class:`ArgumentError` (known before any image is decoded)."""
    by_name = _annotation_ids(annotations) if annotations else None
    ids: dict[str, int] = {}
    owner: dict[int, str] = {}
    for path in dict.fromkeys(paths):
        name = image_name(path)
        if by_name is not None:
            found = by_name.get(name)
            if found is None:
                raise ArgumentError(f"--format coco: {printable_path(path)}: {name!r} is not a file_name of the "
                                    f"images in {annotations}")
        else:
            numbers = re.findall(r"\d+", os.path.splitext(name)[0])
            if not numbers:
                raise ArgumentError(f"--format coco: {printable_path(path)}: its name holds no image id (a number); "
                                    "give the COCO annotation file with --coco-ids")
            found = int(numbers[-1])
        if found in owner:
            raise ArgumentError(f"--format coco: {printable_path(owner[found])} and {printable_path(path)} both have "
                                f"image id {found}; give the COCO annotation file with --coco-ids")
        ids[path], owner[found] = found, path
    return ids


def _annotation_ids(path: str) -> dict[str, int]:
    try:
        with open(path, encoding="utf-8") as handle:
            images = json.load(handle)["images"]
        return {os.path.basename(image["file_name"]): int(image["id"]) for image in images}
    except OSError as error:
        raise ArgumentError(f"--coco-ids {path}: cannot read it ({error.strerror or error})") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ArgumentError(f"--coco-ids {path}: not a COCO annotation file with images[].id and "
                            f"images[].file_name ({type(error).__name__}: {error})") from None


def write_results(path: str | os.PathLike, records: Iterable[dict], fmt: str,
                  image_ids: dict[str, int] | None = None) -> None:
    """Write ``records`` (in order) to ``path`` as ``fmt``, atomically: complete or not at all.
    ``image_ids``: each path's COCO id (``coco`` only, :func:`coco_image_ids`)."""
    if fmt == "coco":
        write_json_atomic(path, [{"image_id": image_ids[r["path"]], "caption": r["captions"][0]["caption"]}
                                 for r in records if r.get("captions")])
        return

    def lines(handle):
        for record in records:
            for line in ([json.dumps(record, ensure_ascii=False)] if fmt == "jsonl" else tsv_lines(record)):
                handle.write(line + "\n")

    atomic_write(path, lines)


def read_coco_results(path: str | os.PathLike) -> dict[int, str]:
    """A COCO results file (``[{"image_id", "caption"}]``) as {image id: caption}; a malformed
    file or a repeated id is a :class:`UserError` naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
        captions: dict[int, str] = {}
        for entry in entries:
            image_id, caption = int(entry["image_id"]), entry["caption"]
            if not isinstance(caption, str):
                raise TypeError(f"caption of image {image_id} is not a string")
            if image_id in captions:
                raise ValueError(f"image {image_id} has two captions")
            captions[image_id] = caption
        return captions
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror or error})") from None
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not a COCO results file of [{{\"image_id\", \"caption\"}}] "
                        f"({type(error).__name__}: {error})") from None
