"""Download and prepare MS COCO 2014 with Karpathy's split for caption training.

    python data_scripts/get_coco.py [--root data] [--keep-zips] [--skip-images]

Result, under --root (default: data/ in the project):

    coco/train2014/  coco/val2014/                      82,783 + 40,504 images
    coco/annotations/captions_train2014.json, captions_val2014.json
    coco/dataset_coco.json                              Karpathy's train/val/test split

About 20 GB of images, downloaded as two zips (13.5 GB and 6.6 GB). Every download is
checked against its SHA-256 and resumes where it stopped when interrupted; a rerun skips
whatever is already complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from download import (
    DownloadError, Resource, check_images, download, ensure_free_space, extract, karpathy_splits,
    keep_member, pick, print_ready, report_check,
)

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "data"
CONFIG = "configs/coco_resnet101.yaml"
CAPTION_FILES = ("captions_train2014.json", "captions_val2014.json")

# COCO publishes no checksums. These SHA-256 values and sizes are the ones TensorFlow
# Datasets verifies its COCO downloads against (tensorflow_datasets/url_checksums/coco2014.txt).
RESOURCES = {
    "karpathy": karpathy_splits(),
    "annotations": Resource(
        "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
        "annotations_trainval2014.zip", 252872794,
        "031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009",
    ),
    "val2014": Resource(
        "http://images.cocodataset.org/zips/val2014.zip", "val2014.zip", 6645013297,
        "fe9be816052049c34717e077d9e34aa60814a55679f804cd043e3cbee3b9fde0",
    ),
    "train2014": Resource(
        "http://images.cocodataset.org/zips/train2014.zip", "train2014.zip", 13510573713,
        "ede4087e640bddba550e090eae701092534b554b42b05ac33f0300b984b31775",
    ),
}


def _fetch_and_extract(key: str, coco: Path, select, keep_zip: bool, images: bool = False) -> None:
    archive = download(RESOURCES[key], coco, extracted_too=images)
    extract(archive, coco, select)
    if not keep_zip:
        archive.unlink()


def _under(folder: str):
    """Member filter for an image zip: the files in ``folder/``, nothing else."""
    return lambda name: name if name.startswith(folder + "/") and keep_member(name) else None


def _check_space(coco: Path, steps: list[str], keep_zips: bool) -> None:
    """Fail before the first byte when the whole run cannot fit on the disk.

    Extracted images take about as much room as their zip (JPEGs do not compress), and
    without --keep-zips each zip is deleted once extracted, so the peak is everything
    extracted plus the largest zip.
    """
    sizes = [RESOURCES[step].size or 0 for step in steps]
    needed = 2 * sum(sizes) if keep_zips else sum(sizes) + max(sizes, default=0)
    for step in steps:  # bytes already on disk from an interrupted run
        for done in (coco / RESOURCES[step].filename, coco / (RESOURCES[step].filename + ".part")):
            needed -= done.stat().st_size if done.exists() else 0
    ensure_free_space(coco, needed, "COCO 2014 (" + ", ".join(steps) + ")")


def prepare(root: Path, keep_zips: bool = False, skip_images: bool = False) -> int:
    coco = root / "coco"
    coco.mkdir(parents=True, exist_ok=True)
    split_json = coco / "dataset_coco.json"
    steps = []
    if not split_json.is_file():
        steps.append("karpathy")
    if not all((coco / "annotations" / name).is_file() for name in CAPTION_FILES):
        steps.append("annotations")
    if not skip_images:
        steps += [name for name in ("val2014", "train2014") if not (coco / name).is_dir()]
    if not steps:
        print(f"COCO 2014: everything is already in {coco}")
    else:
        _check_space(coco, steps, keep_zips)

    if "karpathy" in steps:
        _fetch_and_extract("karpathy", coco, pick({split_json.name}), keep_zips)
    if "annotations" in steps:
        _fetch_and_extract("annotations", coco, pick(set(CAPTION_FILES), "annotations"), keep_zips)
    for name in ("val2014", "train2014"):
        if name in steps:
            _fetch_and_extract(name, coco, _under(name), keep_zips, images=True)

    expected = [split_json, *(coco / "annotations" / name for name in CAPTION_FILES)]
    expected += [] if skip_images else [coco / "train2014", coco / "val2014"]
    absent = [str(path) for path in expected if not path.exists()]
    if absent:
        raise DownloadError(f"the archives did not contain {', '.join(absent)}")
    if skip_images:
        print(f"COCO 2014 captions and split are in {coco} (images skipped: rerun without --skip-images)")
        return 0
    splits, missing = check_images(split_json, lambda image: coco / image["filepath"] / image["filename"])
    if not report_check("COCO 2014", split_json, coco, splits, missing):
        return 1
    overrides = {} if root.resolve() == DEFAULT_ROOT else {"data.path": split_json, "data.images": coco}
    print_ready("COCO 2014", coco, CONFIG, overrides)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="data folder (default: %(default)s)")
    parser.add_argument("--keep-zips", action="store_true", help="keep the downloaded zips after extracting")
    parser.add_argument("--skip-images", action="store_true",
                        help="only the captions and the split, not the 20 GB of images")
    args = parser.parse_args(argv)
    try:
        return prepare(args.root, keep_zips=args.keep_zips, skip_images=args.skip_images)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
