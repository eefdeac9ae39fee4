"""Images in tar shards (WebDataset / img2dataset layout), read in place through the one reader."""

from __future__ import annotations

import io
import json
import pickle
import tarfile

import pytest
from PIL import Image

from captioner.cli import main
from captioner.data.images import IMAGE_EXTENSIONS, ImageLoadError, find_images, load_image
from captioner.data.shards import TarMember, expand_braces, shard_members
from helpers import random_images


def write_shard(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_member_reads_as_the_same_image_as_the_file(tmp_path):
    data = png((10, 200, 30))
    (tmp_path / "a.png").write_bytes(data)
    write_shard(tmp_path / "s.tar", {"b.json": b"{}", "a.png": data, "c.txt": b"a caption"})
    [member] = shard_members(str(tmp_path / "s.tar"), IMAGE_EXTENSIONS)  # the metadata members are left out
    assert member == f"{tmp_path}/s.tar/a.png" and member.key == "a" and member.size == len(data)
    assert load_image(member).tobytes() == load_image(tmp_path / "a.png").tobytes()
    assert pickle.loads(pickle.dumps(member)).offset == member.offset  # for image-reading processes


def test_bad_members_and_shards_get_one_line_errors_naming_shard_and_member(tmp_path):
    big = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(big, format="JPEG")
    members = {"cut.jpg": big.getvalue()[:400], "empty.jpg": b"", "text.jpg": b"hello"}
    write_shard(tmp_path / "s.tar", members)
    reasons = {}
    for member in shard_members(str(tmp_path / "s.tar"), IMAGE_EXTENSIONS):
        with pytest.raises(ImageLoadError) as error:
            load_image(member)
        assert str(error.value).startswith(f"{tmp_path}/s.tar/{member.name}: ") and "\n" not in str(error.value)
        reasons[member.name] = error.value.reason
    assert reasons.pop("empty.jpg") == "empty member (0 bytes)"
    assert reasons["cut.jpg"].startswith("truncated image file")
    for name, reason in reasons.items():  # what reading the same bytes from a file says
        (tmp_path / name).write_bytes(members[name])
        with pytest.raises(ImageLoadError) as error:
            load_image(tmp_path / name)
        assert error.value.reason == reason
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with tarfile.open(tmp_path / "z.tar", "w:gz") as archive:
        archive.addfile(tarfile.TarInfo("x.png"), io.BytesIO(b""))
    for name, reason in (("junk.tar", "not a readable tar archive"), ("z.tar", "compressed tar shards cannot")):
        [member] = find_images([str(tmp_path / name)])
        with pytest.raises(ImageLoadError, match=f"^{tmp_path}/{name}: {reason}"):
            load_image(member)


def test_brace_patterns_expand_and_names_that_exist_stay(tmp_path):
    assert expand_braces("s/{00..02}.tar") == ["s/00.tar", "s/01.tar", "s/02.tar"]
    (tmp_path / "{odd}.tar").write_bytes(b"")
    assert expand_braces(str(tmp_path / "{odd}.tar")) == [str(tmp_path / "{odd}.tar")]


def test_a_shard_that_is_gone_when_read_is_one_line(tmp_path):
    write_shard(tmp_path / "s.tar", {"a.png": png((1, 2, 3))})
    [member] = find_images([str(tmp_path / "s.tar")])
    (tmp_path / "s.tar").unlink()
    with pytest.raises(ImageLoadError, match="a.png: no such shard"):
        load_image(member)


@pytest.mark.slow
def test_a_thousand_images_in_shards_caption_as_the_unpacked_files(tmp_path, fast_ckpt, capsys):
    """Four shards of 250 images each beside their metadata, one member truncated and one that
    is no image: the same records as the unpacked folder (paths aside), in the same order."""
    folder = tmp_path / "unpacked"
    paths = random_images(folder, 1000)
    (folder / "0500.png").write_bytes(paths[500].read_bytes()[:60])
    (folder / "0501.txt").write_text("a caption, not an image")
    (tmp_path / "shards").mkdir()
    for shard in range(4):
        members = {}
        for path in paths[shard * 250:(shard + 1) * 250]:
            members[path.name] = path.read_bytes()
            members[path.stem + ".json"] = json.dumps({"key": path.stem}).encode()
        if shard == 2:
            members["0501.txt"] = (folder / "0501.txt").read_bytes()
        write_shard(tmp_path / "shards" / f"{shard:05d}.tar", members)
    common = ["--checkpoint", str(fast_ckpt), "--quiet", "--workers", "0"]
    assert main(["caption", str(folder), *common, "--jsonl", str(tmp_path / "files.jsonl")]) == 1
    capsys.readouterr()
    pattern = str(tmp_path / "shards" / "{00000..00003}.tar")
    assert main(["caption", pattern, *common, "--jsonl", str(tmp_path / "shards.jsonl")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: {tmp_path}/shards/00002.tar/0500.png: truncated image file"), err
    assert err[1:] == ["captioner caption: 1 of 1000 images could not be read"]
    files = [json.loads(line) for line in (tmp_path / "files.jsonl").read_text().splitlines()]
    shards = [json.loads(line) for line in (tmp_path / "shards.jsonl").read_text().splitlines()]
    assert [r["path"] for r in shards] == [f"{tmp_path}/shards/{i // 250:05d}.tar/{i:04d}.png" for i in range(1000)]
    for record in files + shards:
        record["path"] = record["path"].rsplit("/", 1)[1]
        if "error" in record:
            record["error"] = record["error"].rsplit("/", 1)[1]
    assert shards == files
