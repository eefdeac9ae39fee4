"""Download and prepare Flickr8k or Flickr30k with Karpathy's split for caption training.

    python data_scripts/get_flickr.py 8k  [--root data] [--images-archive PATH] [--keep-zips]
    python data_scripts/get_flickr.py 30k --images-archive PATH [--root data]

Result, under --root (default: data/ in the project):

    flickr8k/Flicker8k_Dataset/       8,091 images (the folder name's misspelling is the
                                      official zip's own, kept so published code finds it)
    flickr8k/Flickr8k.token.txt, Flickr_8k.{train,dev,test}Images.txt, the other text files
    flickr8k/dataset_flickr8k.json    Karpathy's train/val/test split
    flickr30k/flickr30k-images/       31,783 images, from an archive you obtained yourself
    flickr30k/dataset_flickr30k.json  Karpathy's split

The Flickr8k request form of its authors is gone; the zips come from the widely used
mirror in the GitHub releases of jbrownlee/Datasets. The Flickr30k images are given out
only to people who accept their terms, so this script takes a local copy of the archive.
A rerun skips whatever is already complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path, PurePosixPath

from download import (
    DownloadError, Resource, check_images, download, ensure_free_space, extract, file_digests,
    karpathy_splits, keep_member, pick, print_ready, record_checksum, report_check,
)

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "data"
FLICKR8K_TEXT = ("Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt",
                 "Flickr_8k.testImages.txt")
FLICKR30K_FORM = "https://forms.illinois.edu/sec/229675"
FLICKR30K_PAGE = "https://shannon.cs.illinois.edu/DenotationGraph/"

DATASETS = {
    "8k": {"name": "Flickr8k", "folder": "flickr8k", "images": "Flicker8k_Dataset",
           "split": "dataset_flickr8k.json"},
    "30k": {"name": "Flickr30k", "folder": "flickr30k", "images": "flickr30k-images",
            "split": "dataset_flickr30k.json"},
}
# Flickr30k trains with the Flickr8k settings, pointed at its own data and run folder.
CONFIG = "configs/flickr8k.yaml"
CONFIG_OVERRIDES = {"30k": {"data.name": "flickr30k-karpathy", "train.out_dir": "runs/flickr30k"}}

# The mirror publishes no checksums; these MD5 values are the ones the R torchvision
# package verifies the same two URLs against (mlverse/torchvision, R/dataset-flickr.R).
RESOURCES = {
    "karpathy": karpathy_splits(),
    "8k-images": Resource(
        "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
        "Flickr8k_Dataset.zip", md5="f18a1e2920de5bd84dae7cf08ec78978",
    ),
    "8k-text": Resource(
        "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
        "Flickr8k_text.zip", md5="bf6c1abcb8e4a833b7f922104de18627",
    ),
}


def _images_into(folder: str):
    """Member filter: every JPEG of the archive, flattened into ``folder``.

    Copies of these archives nest the images differently (flickr30k-images/,
    flickr30k_images/flickr30k_images/, ...); flattening gives one layout for all.
    """

    def select(name: str):
        base = PurePosixPath(name).name
        return f"{folder}/{base}" if base.lower().endswith((".jpg", ".jpeg")) and keep_member(name) else None

    return select


def _text_files(name: str):
    """Member filter for Flickr8k_text.zip: its .txt files (captions, splits, licence readme)."""
    return PurePosixPath(name).name if name.endswith(".txt") and keep_member(name) else None


def _local_images(archive: Path, folder: Path, spec: dict) -> None:
    """Extract a user-supplied image archive and record its SHA-256 (nobody publishes one)."""
    if not archive.is_file():
        raise DownloadError(f"--images-archive {archive}: no such file")
    ensure_free_space(folder, archive.stat().st_size, archive.name)
    sha256 = file_digests(archive)["sha256"]
    checksums = record_checksum(folder, archive.name, sha256)
    print(f"{archive.name}: SHA-256 {sha256} recorded in {checksums}")
    extract(archive, folder, _images_into(spec["images"]))


def _fetch(key: str, folder: Path, select, keep_zip: bool, images: bool = False) -> None:
    archive = download(RESOURCES[key], folder, extracted_too=images)
    extract(archive, folder, select)
    if not keep_zip:
        archive.unlink()


def prepare(which: str, root: Path, images_archive: Path | None = None, keep_zips: bool = False) -> int:
    spec = DATASETS[which]
    folder = root / spec["folder"]
    image_dir = folder / spec["images"]
    split_json = folder / spec["split"]
    if not image_dir.is_dir() and images_archive is None and which == "30k":
        print(
            "error: the Flickr30k images cannot be downloaded by this script: their owners give them out "
            f"only to people who accept their terms of use. Request them with the form at {FLICKR30K_FORM} "
            f"(see {FLICKR30K_PAGE}), then rerun: python data_scripts/get_flickr.py 30k "
            "--images-archive PATH/flickr30k-images.tar.gz",
            file=sys.stderr,
        )
        return 2
    folder.mkdir(parents=True, exist_ok=True)

    if image_dir.is_dir():
        print(f"{image_dir}: already extracted" + (", --images-archive not needed" if images_archive else ""))
    elif images_archive is not None:
        _local_images(images_archive, folder, spec)
    else:
        _fetch("8k-images", folder, _images_into(spec["images"]), keep_zips, images=True)
    if which == "8k" and not all((folder / name).is_file() for name in FLICKR8K_TEXT):
        _fetch("8k-text", folder, _text_files, keep_zips)
    if not split_json.is_file():
        _fetch("karpathy", folder, pick({split_json.name}), keep_zips)

    expected = [image_dir, split_json] + [folder / name for name in FLICKR8K_TEXT if which == "8k"]
    absent = [str(path) for path in expected if not path.exists()]
    if absent:
        raise DownloadError(f"the archives did not contain {', '.join(absent)}")
    splits, missing = check_images(split_json, lambda image: image_dir / image["filename"])
    if not report_check(spec["name"], split_json, image_dir, splits, missing):
        return 1
    overrides = dict(CONFIG_OVERRIDES.get(which, {}))
    if which != "8k" or root.resolve() != DEFAULT_ROOT:
        overrides.update({"data.path": split_json, "data.images": image_dir})
    print_ready(spec["name"], folder, CONFIG, overrides)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS), help="8k or 30k")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="data folder (default: %(default)s)")
    parser.add_argument("--images-archive", type=Path, metavar="PATH",
                        help="a local zip or tar of the images (needed for 30k; for 8k it replaces the download)")
    parser.add_argument("--keep-zips", action="store_true", help="keep the downloaded zips after extracting")
    args = parser.parse_args(argv)
    try:
        return prepare(args.dataset, args.root, args.images_archive, args.keep_zips)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
