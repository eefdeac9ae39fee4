"""Shared helpers for the dataset scripts (get_coco.py, get_flickr.py).

Downloads stream into ``NAME.part`` with a progress bar, resume from where they stopped
(HTTP Range) when the server allows it, and are renamed to ``NAME`` only after the
checksum matched, so a file under its final name is always complete. Archives are
extracted into a staging folder and moved into place at the end; members that would land
outside the target folder (``../x``, absolute paths, links) make the whole archive be
refused. Only the standard library and tqdm are used.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shlex
import shutil
import ssl
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Optional

from tqdm import tqdm

PROJECT = Path(__file__).resolve().parent.parent
TIMEOUT = 15  # seconds, for connecting and for each read
CHUNK = 1 << 20
DISK_MARGIN = 200 * 10**6  # head-room kept free beyond what a step needs
CHECKSUMS_FILE = "CHECKSUMS.sha256"
OFFLINE_HINT = "Without internet, use the offline dataset instead: make offline-data"

# Karpathy's splits of COCO, Flickr8k and Flickr30k, one zip for the three. SHA-256 and size
# from TensorFlow Datasets (tensorflow_datasets/url_checksums/coco_captions.txt).
KARPATHY_SPLITS_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
KARPATHY_SPLITS_SHA256 = "4cfd70132527b80933105e5829dc9034eaab9573482e2e680abbab6130244817"
KARPATHY_SPLITS_SIZE = 36745453


class DownloadError(Exception):
    """A failure to report to the user as one line, without a traceback."""


class OfflineError(DownloadError):
    pass


class UnsafeArchiveError(DownloadError):
    pass


class _ConnectionDropped(Exception):
    """The transfer stopped midway; the ``.part`` file is kept for resuming."""


@dataclass(frozen=True)
class Resource:
    """A file to download, with the size and checksums known for it (None: unknown)."""

    url: str
    filename: str
    size: Optional[int] = None
    sha256: Optional[str] = None
    md5: Optional[str] = None


def karpathy_splits() -> Resource:
    return Resource(KARPATHY_SPLITS_URL, "caption_datasets.zip", KARPATHY_SPLITS_SIZE, KARPATHY_SPLITS_SHA256)


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def ensure_free_space(directory: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed + DISK_MARGIN:
        raise DownloadError(
            f"not enough disk space in {directory} for {what}: it needs about {human(needed)}, "
            f"{human(free)} is free. Free some space or pass --root on a bigger disk"
        )


def _open(url: str, offset: int, timeout: float):
    """Open ``url`` from byte ``offset``; None when the server says the range is past the end."""
    request = urllib.request.Request(url, headers={"User-Agent": "captioner-data-scripts"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            error.close()
            return None
        raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, ssl.SSLError):
            raise DownloadError(f"secure connection to {url} failed ({reason})") from None
        raise OfflineError(
            f"could not reach {url} ({reason}): this machine seems to be offline. {OFFLINE_HINT}"
        ) from None


def _content_range_start(header: Optional[str]) -> Optional[int]:
    """The first byte of a ``Content-Range: bytes START-END/TOTAL`` header."""
    try:
        return int(header.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _fetch(resource: Resource, part: Path, extracted_too: bool, timeout: float) -> None:
    """Bring ``part`` up to the whole file, appending to what an earlier attempt left."""
    offset = part.stat().st_size if part.exists() else 0
    if resource.size is not None and offset >= resource.size:
        return  # already complete (or too long): the checksum decides
    response = _open(resource.url, offset, timeout)
    if response is None:
        return
    with response:
        mode = "wb"
        if offset and response.status == 206:
            if _content_range_start(response.headers.get("Content-Range")) != offset:
                part.unlink()
                raise _ConnectionDropped("the server answered an unexpected byte range")
            mode = "ab"
        elif offset:
            print(f"{resource.filename}: the server cannot resume downloads, starting over")
            offset = 0
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        total = offset + length if length is not None else resource.size
        remaining = length if length is not None else (resource.size or 0) - offset
        needed = remaining + ((total or 0) if extracted_too else 0)
        ensure_free_space(part.parent, needed, resource.filename + (" and its contents" if extracted_too else ""))
        received = 0
        with open(part, mode) as out, tqdm(
            total=total, initial=offset, desc=resource.filename, unit="B", unit_scale=True, disable=None
        ) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (http.client.HTTPException, OSError) as error:
                    raise _ConnectionDropped(f"the connection broke ({error})") from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if length is not None and received < length:
        raise _ConnectionDropped(
            f"the connection closed after {human(offset + received)} of {human(offset + length)}"
        )


def file_digests(path: Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file for each hashlib algorithm named, in one read."""
    hashes = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}
    with open(path, "rb") as f, tqdm(
        total=path.stat().st_size, desc=f"checking {path.name.removesuffix('.part')}", unit="B",
        unit_scale=True, disable=None, leave=False,
    ) as bar:
        while chunk := f.read(CHUNK):
            for h in hashes.values():
                h.update(chunk)
            bar.update(len(chunk))
    return {name: h.hexdigest() for name, h in hashes.items()}


def record_checksum(directory: Path, filename: str, sha256: str) -> Path:
    """Write ``sha256  filename`` into directory/CHECKSUMS.sha256 (``sha256sum -c`` format)."""
    path = directory / CHECKSUMS_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [line for line in lines if line.split("  ", 1)[-1] != filename]
    lines.append(f"{sha256}  {filename}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(sorted(lines, key=lambda line: line.split("  ", 1)[-1])) + "\n")
    os.replace(tmp, path)
    return path


def _verify(resource: Resource, part: Path) -> str:
    """Check ``part`` against the known checksums; delete it on a mismatch."""
    digests = file_digests(part, ("sha256", "md5") if resource.md5 else ("sha256",))
    for algorithm in ("sha256", "md5"):
        expected = getattr(resource, algorithm)
        if expected and digests[algorithm] != expected.lower():
            part.unlink()
            raise DownloadError(
                f"{resource.filename} from {resource.url} is corrupt: {algorithm.upper()} "
                f"{digests[algorithm]} instead of {expected} (removed; rerun to download it again)"
            )
    record_checksum(part.parent, resource.filename, digests["sha256"])
    if resource.sha256:
        return "SHA-256 verified"
    if resource.md5:
        return f"MD5 verified, SHA-256 recorded in {CHECKSUMS_FILE}"
    return f"no published checksum, SHA-256 recorded in {CHECKSUMS_FILE}"


def download(
    resource: Resource, directory: Path, *, extracted_too: bool = False, attempts: int = 3,
    timeout: float = TIMEOUT,
) -> Path:
    """Download ``resource`` into ``directory`` unless it is already there; return its path.

    ``extracted_too``: the free-space check also counts the archive's size again, for
    extracting it (right for zips of JPEGs, which do not compress).
    A dropped connection is resumed up to ``attempts`` times in this run; after that the
    ``.part`` file stays, and the next run resumes from it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / resource.filename
    if target.exists():
        print(f"{resource.filename}: already downloaded")
        return target
    part = target.with_name(target.name + ".part")
    size = f" ({human(resource.size)})" if resource.size else ""
    print(f"{resource.filename}: downloading{size} from {resource.url}")
    for attempt in range(1, attempts + 1):
        try:
            _fetch(resource, part, extracted_too, timeout)
            break
        except _ConnectionDropped as error:
            if attempt == attempts:
                raise DownloadError(
                    f"{resource.filename}: {error}; the partial file {part} is kept, rerun to resume"
                ) from None
            print(f"{resource.filename}: {error}; resuming (attempt {attempt + 1} of {attempts})")
    note = _verify(resource, part)
    os.replace(part, target)
    print(f"{resource.filename}: done, {note}")
    return target


def _check_member(archive: Path, name: str) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise UnsafeArchiveError(
            f"{archive} refused: its member {name!r} would be written outside the target folder"
        )


@contextmanager
def _members(archive: Path) -> Iterator[tuple[Optional[int], Iterator]]:
    """(member count or None, iterator of (name, open_function or None for folders)).

    Every member is checked before it is yielded; zip members all up front.
    """
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member(archive, info.filename)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise UnsafeArchiveError(f"{archive} refused: its member {info.filename!r} is a link")
            yield len(infos), ((i.filename, None if i.is_dir() else (lambda i=i: zf.open(i))) for i in infos)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:

            def members():
                for member in tf:
                    _check_member(archive, member.name)
                    if not (member.isfile() or member.isdir()):
                        raise UnsafeArchiveError(
                            f"{archive} refused: its member {member.name!r} is a link or device"
                        )
                    yield member.name, None if member.isdir() else (lambda m=member: tf.extractfile(m))

            yield None, members()
    else:
        raise DownloadError(f"{archive} is neither a zip nor a tar archive (damaged download?)")


def keep_member(name: str) -> Optional[str]:
    """Default member filter: everything except macOS metadata (__MACOSX/, ._*, .DS_Store)."""
    parts = PurePosixPath(name).parts
    if not parts or "__MACOSX" in parts or parts[-1].startswith("._") or parts[-1] == ".DS_Store":
        return None
    return name


def _move_into(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, merging folders and replacing files."""
    if source.is_dir() and target.is_dir():
        for child in source.iterdir():
            _move_into(child, target / child.name)
        source.rmdir()
    else:
        os.replace(source, target)


def extract(
    archive: Path, destination: Path, select: Callable[[str], Optional[str]] = keep_member
) -> list[str]:
    """Extract the files of ``archive`` that ``select`` maps to a relative path; return those paths.

    Files are written into a staging folder inside ``destination`` and moved into place
    once all are out, so a refused or interrupted extraction leaves nothing half-done.
    """
    staging = destination / f".{archive.name}.extracting"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    written = []
    try:
        with _members(archive) as (count, members), tqdm(
            total=count, desc=f"extracting {archive.name}", unit=" files", disable=None
        ) as bar:
            for name, opener in members:
                bar.update(1)
                relative = select(name) if opener is not None else None
                if relative is None:
                    continue
                _check_member(archive, relative)
                out = staging / relative
                out.parent.mkdir(parents=True, exist_ok=True)
                with opener() as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                written.append(relative)
        for child in list(staging.iterdir()):
            _move_into(child, destination / child.name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        raise DownloadError(f"{archive} is damaged ({error}); delete it and rerun") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def pick(names: set[str], folder: str = "") -> Callable[[str], Optional[str]]:
    """A member filter keeping the files whose base name is in ``names``, placed in ``folder``."""

    def select(name: str) -> Optional[str]:
        base = PurePosixPath(name).name
        return str(PurePosixPath(folder, base)) if base in names and keep_member(name) else None

    return select


def check_images(split_json: Path, image_path: Callable[[dict], Path]) -> tuple[Counter, list[Path]]:
    """Images per split in a Karpathy split file, and those of its images that are missing."""
    images = json.loads(split_json.read_text())["images"]
    splits = Counter(image["split"] for image in images)
    missing = [path for path in map(image_path, images) if not path.is_file()]
    return splits, missing


def report_check(name: str, split_json: Path, image_dir: Path, splits: Counter, missing: list[Path]) -> bool:
    """Print the result of check_images; True when nothing is missing."""
    total = sum(splits.values())
    counts = ", ".join(f"{split} {n}" for split, n in sorted(splits.items()))
    if not missing:
        print(f"{split_json.name}: {total} images ({counts}), all present under {image_dir}")
        return True
    examples = ", ".join(p.name for p in missing[:5])
    print(
        f"{name}: {len(missing)} of the {total} images listed in {split_json.name} are missing "
        f"(e.g. {examples}); delete {image_dir} and rerun to extract the images again"
    )
    return False


def print_ready(name: str, folder: Path, config: str, overrides: dict[str, object]) -> None:
    """Say the data is ready and how to train on it; ``overrides`` go on the command line.

    Paths are shown as the configs write them: relative to the project when inside it.
    """

    def shown(value: object) -> object:
        if not isinstance(value, Path):
            return value
        value = value.resolve()
        return value.relative_to(PROJECT) if value.is_relative_to(PROJECT) else value

    command = f"captioner train --config {config}"
    command += "".join(f" --set {shlex.quote(f'{key}={shown(value)}')}" for key, value in overrides.items())
    print(f"{name} is ready in {folder}. Train with: {command}")
