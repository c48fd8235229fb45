"""`superconv data fetch` against a local HTTP server: resume, checksums, errors, safe extraction.

The server runs on 127.0.0.1 (port 0, a thread) and serves files the tests
write; it honours HTTP Range requests like the real servers. No other network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import tarfile
import threading

import pytest

from superconv import fetch as fetch_module
from superconv.cli import main
from superconv.data import DataError
from superconv.fetch import download, extract_tar, fetch

# ----------------------------------------------------------------------------- the server


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET with Range support (bytes=N-), 404 for missing files; logs each request."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        server = self.server
        path = server.root / self.path.lstrip("/")
        server.log.append({"path": self.path, "range": self.headers.get("Range")})
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        if header and server.honour_range:
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        server.log[-1]["sent"] = len(body)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.root, httpd.log, httpd.honour_range = root, [], True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def make_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


CIFAR_MEMBERS = {
    "cifar-10-batches-bin/data_batch_1.bin": bytes(range(256)) * 40,
    "cifar-10-batches-bin/test_batch.bin": b"test bytes " * 500,
}


@pytest.fixture
def cifar_archive(server):
    data = make_tar(CIFAR_MEMBERS)
    (server.root / "cifar-10-binary.tar.gz").write_bytes(data)
    return data


# ----------------------------------------------------------------------------- tests
def test_fetch_downloads_verifies_and_extracts_into_the_expected_layout(
    server, cifar_archive, tmp_path
):
    data_dir = tmp_path / "data"
    root = fetch(
        "cifar10",
        data_dir,
        url_base=server.url,
        checksums={"cifar-10-binary.tar.gz": md5(cifar_archive)},
        progress=False,
    )
    assert root == data_dir
    for name, content in CIFAR_MEMBERS.items():
        assert (data_dir / name).read_bytes() == content
    # The archive is gone after extraction; no partial or temporary files remain.
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-batches-bin"]
    assert server.log[0]["path"] == "/cifar-10-binary.tar.gz" and server.log[0]["range"] is None


def test_an_interrupted_download_resumes_with_a_range_request(server, cifar_archive, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    half = len(cifar_archive) // 2
    (data_dir / "cifar-10-binary.tar.gz.part").write_bytes(cifar_archive[:half])
    fetch(
        "cifar10",
        data_dir,
        url_base=server.url,
        checksums={"cifar-10-binary.tar.gz": md5(cifar_archive)},
        progress=False,
    )
    assert server.log[-1]["range"] == f"bytes={half}-"
    assert server.log[-1]["sent"] == len(cifar_archive) - half  # only the missing bytes
    for name, content in CIFAR_MEMBERS.items():
        assert (data_dir / name).read_bytes() == content


def test_a_server_that_ignores_range_restarts_the_file(server, cifar_archive, tmp_path):
    server.honour_range = False
    part = tmp_path / "f.tar.gz.part"
    part.write_bytes(b"garbage that must not stay in front")
    out = download(
        server.url + "cifar-10-binary.tar.gz",
        tmp_path / "f.tar.gz",
        md5(cifar_archive),
        progress=False,
    )
    assert out.read_bytes() == cifar_archive
    assert not part.exists()


def test_a_complete_part_file_is_accepted_after_416(server, cifar_archive, tmp_path):
    (tmp_path / "f.tar.gz.part").write_bytes(cifar_archive)
    out = download(
        server.url + "cifar-10-binary.tar.gz",
        tmp_path / "f.tar.gz",
        md5(cifar_archive),
        progress=False,
    )
    assert out.read_bytes() == cifar_archive
    assert server.log[-1]["range"] == f"bytes={len(cifar_archive)}-"


def test_a_verified_file_is_not_downloaded_again(server, cifar_archive, tmp_path):
    dest = tmp_path / "f.tar.gz"
    dest.write_bytes(cifar_archive)
    download(server.url + "cifar-10-binary.tar.gz", dest, md5(cifar_archive), progress=False)
    assert server.log == []


def test_checksum_mismatch_is_a_clear_error_and_leaves_no_file(server, cifar_archive, tmp_path):
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch.*expected 0{32}.*deleted"):
        fetch(
            "cifar10",
            data_dir,
            url_base=server.url,
            checksums={"cifar-10-binary.tar.gz": "0" * 32},
            progress=False,
        )
    # neither the archive nor its .part, nor the folder this call made for them
    assert not data_dir.exists()


def test_http_404_is_a_clear_error(server, tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz failed: HTTP 404"):
        fetch("cifar10", tmp_path / "data", url_base=server.url, progress=False)


def test_unreachable_server_is_a_clear_error(tmp_path):
    # Port 9 on the loopback interface: nothing listens there (connection refused).
    with pytest.raises(DataError, match="cannot download .*needs network access"):
        fetch("mnist", tmp_path / "data", url_base="http://127.0.0.1:9/", progress=False, timeout=5)


def test_a_failed_fetch_leaves_no_empty_folder_behind(tmp_path, capsys):
    data_dir = tmp_path / "new" / "data"
    code = main(
        ["data", "fetch", "mnist", "--data-dir", str(data_dir), "--url-base", "http://127.0.0.1:9/",
         "--no-progress"]
    )  # fmt: skip
    assert code == 2
    assert "cannot download" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # new/, new/data/ and new/data/mnist/ removed again
    # a folder that was there before stays
    (tmp_path / "kept").mkdir()
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path / "kept"),
                 "--url-base", "http://127.0.0.1:9/", "--no-progress"]) == 2  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_fetch_into_a_data_dir_that_is_a_file_says_so(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert (
        f"cannot create the data folder {tmp_path / 'file' / 'mnist'}: {tmp_path / 'file'} is a "
        "file, not a folder. Point --data-dir" in err
    )
    assert (tmp_path / "file").read_text() == "x"


def test_url_base_from_the_environment_and_idx_files_kept_as_they_are(
    server, tmp_path, monkeypatch
):
    files = {name: f"idx {name}".encode() * 100 for name, _ in fetch_module.SOURCES["mnist"].files}
    for name, data in files.items():
        (server.root / name).write_bytes(data)
    monkeypatch.setenv(fetch_module.URL_BASE_ENV, server.url)
    fetch(
        "mnist",
        tmp_path / "data",
        checksums={n: md5(d) for n, d in files.items()},
        progress=False,
    )
    for name, data in files.items():
        assert (tmp_path / "data" / "mnist" / name).read_bytes() == data
    assert len(server.log) == 4


def test_published_checksums_are_the_official_ones():
    # The MD5 sums published by the CIFAR page and listed by torchvision (not computed here).
    assert dict(fetch_module.SOURCES["cifar10"].files) == {
        "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"
    }
    assert dict(fetch_module.SOURCES["cifar100"].files) == {
        "cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8"
    }
    assert dict(fetch_module.SOURCES["mnist"].files)["train-images-idx3-ubyte.gz"] == (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    )
    assert dict(fetch_module.SOURCES["fashion-mnist"].files)["t10k-labels-idx1-ubyte.gz"] == (
        "bb300cfdad3c16e7a12a480ee83cd310"
    )


@pytest.mark.parametrize(
    "name, problem",
    [
        ("../evil.txt", "a path leaving the data folder"),
        ("cifar-10-batches-bin/../../evil.txt", "a path leaving the data folder"),
        ("/tmp/evil.txt", "an absolute path"),
    ],
)
def test_unsafe_archive_members_are_refused(tmp_path, name, problem):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(make_tar({"cifar-10-batches-bin/ok.bin": b"ok", name: b"evil"}))
    dest = tmp_path / "data"
    dest.mkdir()
    with pytest.raises(DataError, match=f"holds {problem}"):
        extract_tar(archive, dest)
    assert list(dest.iterdir()) == []  # nothing extracted, no temporary folder left
    assert not (tmp_path / "evil.txt").exists()


def test_links_in_archives_are_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        link = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    archive = tmp_path / "link.tar.gz"
    archive.write_bytes(buf.getvalue())
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="a link or special file"):
        extract_tar(archive, tmp_path / "data")


def test_unknown_data_set_suggests_a_name(tmp_path):
    with pytest.raises(DataError, match="did you mean 'cifar10'"):
        fetch("cifar-10", tmp_path)


# ----------------------------------------------------------------------------- the command line
def test_cli_fetch_downloads_and_reports(server, cifar_archive, tmp_path, monkeypatch, capsys):
    source = dataclasses.replace(
        fetch_module.SOURCES["cifar10"], files=(("cifar-10-binary.tar.gz", md5(cifar_archive)),)
    )
    monkeypatch.setattr(fetch_module, "SOURCES", {"cifar10": source})
    data_dir = tmp_path / "data"
    code = main(
        ["data", "fetch", "cifar10", "--data-dir", str(data_dir), "--url-base", server.url,
         "--no-progress", "--no-check"]
    )  # fmt: skip
    assert code == 0
    assert f"downloaded into {data_dir}" in capsys.readouterr().out
    assert (data_dir / "cifar-10-batches-bin" / "test_batch.bin").is_file()


def test_cli_fetch_checks_what_it_downloaded(server, cifar_archive, tmp_path, monkeypatch, capsys):
    # The tiny archive is not a real CIFAR-10: the check after the download says so (exit 2).
    source = dataclasses.replace(
        fetch_module.SOURCES["cifar10"], files=(("cifar-10-binary.tar.gz", md5(cifar_archive)),)
    )
    monkeypatch.setattr(fetch_module, "SOURCES", {"cifar10": source})
    code = main(
        ["data", "fetch", "cifar10", "--data-dir", str(tmp_path / "d"), "--url-base", server.url,
         "--no-progress"]
    )  # fmt: skip
    assert code == 2
    assert "superconv: error: " in capsys.readouterr().err


def test_cli_fetch_404_exits_2_with_the_url(server, tmp_path, capsys):
    code = main(
        ["data", "fetch", "mnist", "--data-dir", str(tmp_path), "--url-base", server.url,
         "--no-progress", "--no-check"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("superconv: error: download of ")
    assert "train-images-idx3-ubyte.gz failed: HTTP 404" in err


def test_cli_data_check_lists_every_data_set(tmp_path, capsys):
    assert main(["data", "check", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:] if line[:1] != " "}
    assert rows["mnist-demo"] == "ok"  # ships in the package
    assert rows["cifar10"] == rows["cifar100"] == rows["mnist"] == "missing"
    assert "data_batch_1.bin" in out  # says which files are expected


def test_cli_data_check_reports_a_damaged_file(tmp_path, capsys):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, _ in fetch_module.SOURCES["mnist"].files:
        (folder / name).write_bytes(b"not gzip, not IDX")
    assert main(["data", "check", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("mnist "))
    assert line.split()[1] == "invalid"


def test_cli_data_check_refuses_a_file_as_data_folder(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    assert main(["data", "check", "--data-dir", str(not_a_folder)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
