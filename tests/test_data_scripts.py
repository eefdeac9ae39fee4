"""The dataset scripts against a real HTTP server on 127.0.0.1 serving small stand-in archives."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "data_scripts"
sys.path.insert(0, str(SCRIPTS))

import download as dl  # noqa: E402
import get_coco  # noqa: E402
import get_flickr  # noqa: E402


class FileServer:
    """Serves ``files`` (path -> bytes) over HTTP with Range support and scripted failures."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before closing, once
        self.ranges = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path.startswith("/redirect/"):
                    self.send_response(302)
                    self.send_header("Location", self.path.removeprefix("/redirect"))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and server.ranges:
                    start = int(header.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if self.path in server.drop_after:
                    body = body[: server.drop_after.pop(self.path)]
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(self, path: str, data: bytes, *, md5: bool = False) -> dl.Resource:
        """Publish ``data`` at ``path``; a Resource for it with its true checksum."""
        self.files[path] = data
        name = path.rsplit("/", 1)[-1]
        if md5:
            return dl.Resource(self.url(path), name, md5=hashlib.md5(data).hexdigest())
        return dl.Resource(self.url(path), name, len(data), hashlib.sha256(data).hexdigest())


@pytest.fixture
def server():
    s = FileServer()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def make_tar(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
    return buffer.getvalue()


def split_json(images: list[tuple[str, str]], **extra) -> bytes:
    """A Karpathy split file listing (filename, split) pairs, plus ``extra`` fields per image."""
    entries = [{"filename": name, "split": split, "sentences": [{"raw": "a photo"}], **extra}
               for name, split in images]
    return json.dumps({"images": entries}).encode()


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 that refuses connections: a port bound but not listening, held for
    the whole test (a port closed again could be taken by another process meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}/caption_datasets.zip"


def count_connections(monkeypatch, allowed: bool = True) -> list[str]:
    """Record every URL the download code opens (and refuse all, when not ``allowed``)."""
    opened, real = [], dl.urllib.request.urlopen

    def urlopen(request, *args, **kwargs):
        opened.append(getattr(request, "full_url", request))
        if not allowed:
            raise AssertionError(f"opened {opened[-1]}")
        return real(request, *args, **kwargs)

    monkeypatch.setattr(dl.urllib.request, "urlopen", urlopen)
    return opened


# --- download() ---------------------------------------------------------------------------


def test_download_verifies_renames_and_records_sha256(server, tmp_path):
    data = bytes(range(256)) * 4000
    resource = server.serve("/files/blob.bin", data)
    path = dl.download(resource, tmp_path)
    assert path == tmp_path / "blob.bin" and path.read_bytes() == data
    assert not (tmp_path / "blob.bin.part").exists()
    assert (tmp_path / "CHECKSUMS.sha256").read_text() == f"{hashlib.sha256(data).hexdigest()}  blob.bin\n"


def test_a_finished_download_is_not_fetched_again(server, tmp_path, capsys):
    resource = server.serve("/blob.bin", b"data" * 100)
    dl.download(resource, tmp_path)
    assert dl.download(resource, tmp_path).read_bytes() == b"data" * 100
    assert len(server.requests) == 1 and "blob.bin: already downloaded" in capsys.readouterr().out


def test_interrupted_download_resumes_on_the_next_run(server, tmp_path):
    data = b"0123456789abcdef" * 50_000
    resource = server.serve("/blob.bin", data)
    server.drop_after["/blob.bin"] = 300_000
    with pytest.raises(dl.DownloadError, match="rerun to resume"):
        dl.download(resource, tmp_path, attempts=1)
    assert not (tmp_path / "blob.bin").exists()
    assert (tmp_path / "blob.bin.part").stat().st_size == 300_000

    path = dl.download(resource, tmp_path, attempts=1)
    assert server.requests == [("/blob.bin", None), ("/blob.bin", "bytes=300000-")]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == resource.sha256
    assert not (tmp_path / "blob.bin.part").exists()


def test_dropped_connection_is_resumed_within_one_run(server, tmp_path, capsys):
    data = b"x" * 200_000 + b"y" * 200_000
    resource = server.serve("/blob.bin", data)
    server.drop_after["/blob.bin"] = 150_000
    assert dl.download(resource, tmp_path).read_bytes() == data
    assert server.requests[1] == ("/blob.bin", "bytes=150000-")
    assert "resuming (attempt 2 of 3)" in capsys.readouterr().out


def test_resume_follows_redirects_with_the_range(server, tmp_path):
    """Release downloads (GitHub's) redirect to a storage host: the Range must survive it."""
    data = bytes(range(200)) * 2000
    server.serve("/blob.bin", data)
    resource = dl.Resource(server.url("/redirect/blob.bin"), "blob.bin", sha256=hashlib.sha256(data).hexdigest())
    server.drop_after["/blob.bin"] = 123_456
    assert dl.download(resource, tmp_path).read_bytes() == data
    assert server.requests[2:] == [("/redirect/blob.bin", "bytes=123456-"), ("/blob.bin", "bytes=123456-")]


def test_server_without_range_support_restarts_instead_of_appending(server, tmp_path):
    data = b"fresh content " * 10_000
    resource = server.serve("/blob.bin", data)
    server.ranges = False
    (tmp_path / "blob.bin.part").write_bytes(b"stale bytes from another run")
    assert dl.download(resource, tmp_path).read_bytes() == data
    assert server.requests == [("/blob.bin", "bytes=28-")]


def test_partial_file_already_complete_gets_verified_without_refetching_bytes(server, tmp_path):
    data = b"complete" * 1000
    resource = dl.Resource(server.url("/blob.bin"), "blob.bin", sha256=hashlib.sha256(data).hexdigest())
    server.files["/blob.bin"] = data
    (tmp_path / "blob.bin.part").write_bytes(data)  # size unknown to the script: it asks, gets 416
    assert dl.download(resource, tmp_path).read_bytes() == data
    assert server.requests == [("/blob.bin", f"bytes={len(data)}-")]


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_checksum_mismatch_is_reported_and_the_file_removed(server, tmp_path, algorithm):
    server.files["/blob.bin"] = b"what the server sends"
    wrong = hashlib.new(algorithm, b"something else").hexdigest()
    resource = dl.Resource(server.url("/blob.bin"), "blob.bin", **{algorithm: wrong})
    with pytest.raises(dl.DownloadError, match=f"corrupt: {algorithm.upper()} .*removed; rerun"):
        dl.download(resource, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_http_error_names_the_url_and_status(server, tmp_path):
    with pytest.raises(dl.DownloadError, match=r"/missing.zip answered HTTP 404"):
        dl.download(dl.Resource(server.url("/missing.zip"), "missing.zip"), tmp_path)


def test_not_enough_disk_space_stops_before_writing(server, tmp_path, monkeypatch):
    resource = server.serve("/big.zip", b"z" * 1000)
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: SimpleNamespace(free=10**6))
    with pytest.raises(dl.DownloadError, match="not enough disk space .* big.zip and its contents"):
        dl.download(resource, tmp_path, extracted_too=True)
    assert list(tmp_path.iterdir()) == []


# --- extract() ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad_name", ["../evil.txt", "inner/../../evil.txt", "/tmp/evil-absolute.txt"])
@pytest.mark.parametrize("select", [dl.keep_member, dl.pick({"good.txt", "evil.txt"})], ids=["all", "by-name"])
def test_zip_path_traversal_is_refused(tmp_path, bad_name, select):
    """Refused as a whole, even when the member filter would have renamed the member safely."""
    archive = tmp_path / "bad.zip"
    archive.write_bytes(make_zip({"good.txt": b"fine", bad_name: b"gotcha"}))
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(dl.UnsafeArchiveError, match=f"refused: its member '{bad_name}'"):
        dl.extract(archive, destination, select)
    assert list(destination.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil-absolute.txt").exists()


def test_tar_with_a_symlink_is_refused(tmp_path):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(make_tar({"images/a.jpg": b"jpg"}, symlink="images/passwd"))
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(dl.UnsafeArchiveError, match="is a link"):
        dl.extract(archive, destination)
    assert list(destination.iterdir()) == []


def test_extract_skips_macos_metadata_and_merges_folders(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"d/new.txt": b"new", "d/old.txt": b"replaced", "__MACOSX/d/._new.txt": b"",
                                  "d/._x": b""}))
    (tmp_path / "out" / "d").mkdir(parents=True)
    (tmp_path / "out" / "d" / "old.txt").write_text("old")
    (tmp_path / "out" / "d" / "kept.txt").write_text("kept")
    assert sorted(dl.extract(archive, tmp_path / "out")) == ["d/new.txt", "d/old.txt"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d"]
    assert {p.name: p.read_text() for p in (tmp_path / "out" / "d").iterdir()} == {
        "new.txt": "new", "old.txt": "replaced", "kept.txt": "kept"}


# --- the scripts --------------------------------------------------------------------------


@pytest.fixture
def flickr8k_server(server, monkeypatch):
    images = {f"Flicker8k_Dataset/{n}.jpg": f"jpeg {n}".encode() for n in ("a", "b", "c", "extra")}
    images["__MACOSX/Flicker8k_Dataset/._a.jpg"] = b"resource fork"
    text = {name: b"a.jpg#0\ta dog\n" for name in get_flickr.FLICKR8K_TEXT}
    text["readme.txt"] = b"terms"
    splits = {"dataset_flickr8k.json": split_json([("a.jpg", "train"), ("b.jpg", "val"), ("c.jpg", "test")]),
              "dataset_coco.json": b"{}"}
    for key, path, members in (("8k-images", "/r/Flickr8k_Dataset.zip", images),
                               ("8k-text", "/r/Flickr8k_text.zip", text)):
        monkeypatch.setitem(get_flickr.RESOURCES, key, server.serve(path, make_zip(members), md5=True))
    monkeypatch.setitem(get_flickr.RESOURCES, "karpathy", server.serve("/caption_datasets.zip", make_zip(splits)))
    return server


def test_get_flickr8k_builds_the_layout_and_a_rerun_downloads_nothing(flickr8k_server, tmp_path, capsys):
    assert get_flickr.main(["8k", "--root", str(tmp_path)]) == 0
    folder = tmp_path / "flickr8k"
    images = sorted(p.name for p in (folder / "Flicker8k_Dataset").iterdir())
    assert images == ["a.jpg", "b.jpg", "c.jpg", "extra.jpg"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["Flicker8k_Dataset", "dataset_flickr8k.json", "CHECKSUMS.sha256", "readme.txt", *get_flickr.FLICKR8K_TEXT])
    checksums = (folder / "CHECKSUMS.sha256").read_text().splitlines()
    names = [line.split("  ")[1] for line in checksums]
    assert names == ["Flickr8k_Dataset.zip", "Flickr8k_text.zip", "caption_datasets.zip"]
    out = capsys.readouterr().out
    assert "MD5 verified, SHA-256 recorded" in out and "3 images (test 1, train 1, val 1), all present" in out
    assert ("Train with: captioner train --config configs/flickr8k.yaml "
            f"--set data.path={folder.resolve()}/dataset_flickr8k.json "
            f"--set data.images={folder.resolve()}/Flicker8k_Dataset") in out

    requests = len(flickr8k_server.requests)
    assert requests == 3
    assert get_flickr.main(["8k", "--root", str(tmp_path)]) == 0
    assert len(flickr8k_server.requests) == requests


def test_get_flickr8k_reports_missing_images(flickr8k_server, tmp_path, monkeypatch, capsys):
    splits = make_zip({"dataset_flickr8k.json": split_json([("a.jpg", "train"), ("gone.jpg", "test")])})
    monkeypatch.setitem(get_flickr.RESOURCES, "karpathy", flickr8k_server.serve("/caption_datasets.zip", splits))
    assert get_flickr.main(["8k", "--root", str(tmp_path)]) == 1
    assert "1 of the 2 images listed in dataset_flickr8k.json are missing (e.g. gone.jpg)" in capsys.readouterr().out


def test_get_coco_builds_the_layout_keeps_zips_and_a_rerun_downloads_nothing(server, tmp_path, monkeypatch, capsys):
    names = {"train": ["COCO_train2014_1.jpg", "COCO_train2014_2.jpg"], "val": ["COCO_val2014_3.jpg"]}
    for key in ("train2014", "val2014"):
        files = {f"{key}/{name}": b"jpeg" for name in names[key[:-4]]}
        monkeypatch.setitem(get_coco.RESOURCES, key, server.serve(f"/zips/{key}.zip", make_zip(files)))
    annotations = {f"annotations/{name}": b"{}" for name in
                   ("captions_train2014.json", "captions_val2014.json", "instances_train2014.json")}
    monkeypatch.setitem(get_coco.RESOURCES, "annotations", server.serve("/annotations.zip", make_zip(annotations)))
    train = json.loads(split_json([(n, "train") for n in names["train"]], filepath="train2014"))["images"]
    val = json.loads(split_json([(n, "restval") for n in names["val"]], filepath="val2014"))["images"]
    splits = json.dumps({"images": train + val}).encode()
    monkeypatch.setitem(get_coco.RESOURCES, "karpathy", server.serve("/caption_datasets.zip",
                                                                   make_zip({"dataset_coco.json": splits})))

    root = tmp_path / "data"
    assert get_coco.main(["--root", str(root), "--skip-images"]) == 0
    assert [path for path, _ in server.requests] == ["/caption_datasets.zip", "/annotations.zip"]
    assert get_coco.main(["--root", str(root), "--keep-zips"]) == 0
    coco = root / "coco"
    caption_files = sorted(p.name for p in (coco / "annotations").iterdir())
    assert caption_files == ["captions_train2014.json", "captions_val2014.json"]
    assert sorted(p.name for p in (coco / "train2014").iterdir()) == names["train"]
    assert (coco / "train2014.zip").exists() and (coco / "val2014.zip").exists()
    out = capsys.readouterr().out
    assert "3 images (restval 1, train 2), all present" in out
    assert ("captioner train --config configs/coco_resnet101.yaml "
            f"--set data.path={coco.resolve()}/dataset_coco.json --set data.images={coco.resolve()}") in out

    requests = len(server.requests)
    assert requests == 4
    assert get_coco.main(["--root", str(root)]) == 0
    assert len(server.requests) == requests


def test_get_coco_checks_the_disk_space_for_the_whole_run_first(server, tmp_path, monkeypatch, capsys):
    for key in ("karpathy", "annotations", "val2014", "train2014"):
        resource = get_coco.RESOURCES[key]
        monkeypatch.setitem(get_coco.RESOURCES, key, dl.Resource(server.url("/" + resource.filename),
                                                                resource.filename, resource.size, resource.sha256))
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: SimpleNamespace(free=30 * 10**9))
    assert get_coco.main(["--root", str(tmp_path)]) == 1
    assert server.requests == []
    assert "not enough disk space" in capsys.readouterr().err
    assert get_coco.main(["--root", str(tmp_path), "--skip-images"]) == 1
    assert [path for path, _ in server.requests] == ["/caption_datasets.zip"]  # enough room: on to the download


def test_get_flickr30k_extracts_a_local_archive_and_records_its_checksum(server, tmp_path, monkeypatch, capsys):
    archive = tmp_path / "flickr30k-images.tar.gz"
    archive.write_bytes(make_tar({"flickr30k_images/flickr30k_images/1.jpg": b"one",
                                  "flickr30k_images/flickr30k_images/2.jpg": b"two",
                                  "flickr30k_images/results.csv": b"csv"}))
    splits = split_json([("1.jpg", "train"), ("2.jpg", "test")])
    monkeypatch.setitem(get_flickr.RESOURCES, "karpathy", server.serve("/caption_datasets.zip",
                                                                     make_zip({"dataset_flickr30k.json": splits})))
    root = tmp_path / "data"
    assert get_flickr.main(["30k", "--root", str(root), "--images-archive", str(archive)]) == 0
    folder = root / "flickr30k"
    assert sorted(p.name for p in (folder / "flickr30k-images").iterdir()) == ["1.jpg", "2.jpg"]
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert f"{digest}  flickr30k-images.tar.gz" in (folder / "CHECKSUMS.sha256").read_text()
    out = capsys.readouterr().out
    assert "2 images (test 1, train 1), all present" in out
    assert ("captioner train --config configs/flickr8k.yaml --set data.name=flickr30k-karpathy "
            f"--set train.out_dir=runs/flickr30k --set data.path={folder.resolve()}/dataset_flickr30k.json") in out


def test_get_flickr30k_without_the_images_explains_where_to_get_them(tmp_path, monkeypatch, capsys):
    count_connections(monkeypatch, allowed=False)  # it explains before downloading anything
    assert get_flickr.main(["30k", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "https://forms.illinois.edu/sec/229675" in err and "--images-archive" in err
    assert list(tmp_path.iterdir()) == []


def test_get_flickr_runs_as_a_script(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPTS / "get_flickr.py"), "30k", "--root", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--images-archive" in result.stderr


def test_unreachable_server_fails_fast_with_the_offline_message(tmp_path, monkeypatch, capsys, closed_port_url):
    url = closed_port_url
    monkeypatch.setitem(get_coco.RESOURCES, "karpathy", dl.Resource(url, "caption_datasets.zip"))
    opened = count_connections(monkeypatch)
    assert get_coco.main(["--root", str(tmp_path), "--skip-images"]) == 1
    assert opened == [url]  # fast: one attempt, no retries
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith(f"error: could not reach {url} (")
    assert "this machine seems to be offline" in err and "make offline-data" in err
