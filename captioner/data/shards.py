"""Images inside tar shards, as WebDataset and img2dataset write them (``KEY.jpg`` beside
``KEY.json``/``KEY.txt``), read in place without unpacking them to disk.

A shard is indexed once (:func:`shard_members`: the tar headers only; the data is skipped
with a seek), and each image member becomes a :class:`TarMember`: a string, ``SHARD/NAME``
(how the member is named in every record and error line), that also knows where its bytes
lie in the shard. :func:`captioner.data.images.load_image` reads such a member through the
same decoder, limits and one-line errors as a file.

The standard library's ``tarfile`` does the indexing rather than ``webdataset``: captioning
needs random access to any member (to split the images into fixed chunks across processes
and to resume a run image by image), and webdataset's pipeline streams each shard from the
start, which would make the shard, not the image, the unit of work. Brace patterns
(``shards/{00000..00999}.tar``) are expanded by ``braceexpand``, the package webdataset uses
for its own shard lists.
"""

from __future__ import annotations

import os
import tarfile

from braceexpand import braceexpand

from ..errors import ArgumentError

SHARD_EXTENSIONS = (".tar",)


class TarMember(str):
    """An image in a tar shard: the string ``SHARD/NAME`` with the member's place in the
    shard (``offset`` and ``size`` of its data). A shard that cannot be read at all is one
    member with ``error`` set and no name, so it is reported like an unreadable file."""

    shard: str
    name: str
    offset: int
    size: int
    error: str | None

    def __new__(cls, shard: str, name: str = "", offset: int = 0, size: int = 0, error: str | None = None):
        member = super().__new__(cls, f"{shard}/{name}" if name else shard)
        member.shard, member.name, member.offset, member.size, member.error = shard, name, offset, size, error
        return member

    def __reduce__(self):  # pickled for image-reading processes
        return TarMember, (self.shard, self.name, self.offset, self.size, self.error)

    @property
    def key(self) -> str:
        """The WebDataset key: the member's name without its extension."""
        return os.path.splitext(self.name)[0]

    def read(self) -> bytes:
        """The member's bytes, read from the shard."""
        with open(self.shard, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(self.size)
        if len(data) < self.size:
            raise EOFError(f"the shard ends {self.size - len(data)} bytes into this member")
        return data


def is_shard(path: str) -> bool:
    return path.lower().endswith(SHARD_EXTENSIONS) and os.path.isfile(path)


def expand_braces(item: str) -> list[str]:
    """``shards/{00000..00002}.tar`` as three names; a name without braces, or one that
    exists as it is, stays one."""
    if "{" not in item or os.path.exists(item):
        return [item]
    try:
        return list(braceexpand(item))
    except Exception as error:  # braceexpand's own UnbalancedBracesError and friends
        raise ArgumentError(f"{item}: not a valid brace pattern ({error})") from None


def shard_members(shard: str, extensions) -> list[TarMember]:
    """The members of ``shard`` whose extension is in ``extensions`` (the image ones), sorted
    by name as a folder of the unpacked files would be. Other members (``.json``, ``.txt``
    metadata) are left out. An unreadable or compressed shard is one member with ``error``."""
    members = []
    try:
        with tarfile.open(shard, "r:") as archive:
            for info in archive:
                if info.isfile() and os.path.splitext(info.name)[1].lower() in extensions:
                    members.append(TarMember(shard, info.name, info.offset_data, info.size))
    except tarfile.ReadError as error:
        reason = "compressed tar shards cannot be read in place; decompress it" \
            if _compressed(shard) else f"not a readable tar archive ({error})"
        return [TarMember(shard, error=reason)]
    except OSError as error:
        return [TarMember(shard, error=f"cannot read the shard ({error.strerror or error})")]
    return sorted(members, key=lambda m: m.name)


def _compressed(shard: str) -> bool:
    try:
        with open(shard, "rb") as handle:
            magic = handle.read(6)
    except OSError:
        return False
    return magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00"
