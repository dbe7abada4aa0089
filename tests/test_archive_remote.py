"""The archive off the local disk: a real SFTP server on loopback, fsspec ``memory://``, ``file://``
URLs, and the generic fsspec protocol on real files; and the settings that choose where it lives.

Each backend is checked the same way: round trips of Chinese content, one object per content,
never overwriting (bytes planted under a hash name stay, and are reported as corrupt), the move
that refuses an existing object, iteration, and concurrent writers of the same bytes.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem
from pydantic import ValidationError

import warehouse.archive as archive_module
from gaibao.settings import Settings, parse_storage_options
from tests.servers import SftpTestServer
from warehouse.archive import Archive, ArchiveCorrupt

PASSWORD = "档案-s3cret"

CONTENTS = [
    "区划代码,学校名称,项目编号,竣工面积(平方米)\n340321,怀远县第一中学,P001,1200.5\n".encode("gbk"),
    json.dumps([{"学校名称": "蚌埠市第二实验小学", "投资(万元)": 35.2}], ensure_ascii=False).encode(),
    b"",
    bytes(range(256)) * 1200,  # a binary return of 300 KB (xlsx-like)
]


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def rel(digest: str) -> str:
    return f"{digest[:2]}/{digest}"


@dataclass
class Backend:
    """An archive and raw access to its store that bypasses the archive (to plant and inspect)."""

    name: str
    archive: Archive
    plant: Callable[[str, bytes], None]  # write bytes at a path relative to the root
    raw: Callable[[str], bytes]
    files: Callable[[], list[str]]  # every file under the root, relative, temp files included
    stamp: Callable[[str], object]  # changes when the object is rewritten
    rehashes: bool  # put re-hashes an object already present (fsspec: yes; local: size only)
    make: Callable[[], Archive]  # another Archive on the same store (another writer)


def _disk_access(root: Path) -> dict[str, Callable]:
    def plant(path: str, data: bytes) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)

    return {
        "plant": plant,
        "raw": lambda path: (root / path).read_bytes(),
        "files": lambda: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()),
        "stamp": lambda path: (root / path).stat().st_mtime_ns,
    }


@pytest.fixture
def sftp_server(tmp_path: Path) -> Iterator[SftpTestServer]:
    root = tmp_path / "sftp-root"
    root.mkdir()
    with SftpTestServer(root=root, username="county", password=PASSWORD) as server:
        yield server
        gc.collect()  # close the archives' SSH connections before the server stops


def sftp_options(server: SftpTestServer, tmp_path: Path) -> dict[str, object]:
    known_hosts = server.write_known_hosts(tmp_path / "known_hosts")
    return {"password": PASSWORD, "known_hosts": str(known_hosts)}


@pytest.fixture(params=["local", "file_url", "fsspec_on_disk", "memory", "sftp"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name = request.param
    if name in ("local", "file_url", "fsspec_on_disk"):
        root = tmp_path / "archive"
        if name == "local":
            make = lambda: Archive(root)  # noqa: E731
        elif name == "file_url":
            make = lambda: Archive(f"file://{root}")  # noqa: E731
        else:  # the generic fsspec protocol (temp upload, read back, move unless present) on disk
            make = lambda: Archive(str(root), fs=LocalFileSystem())  # noqa: E731
        yield Backend(name, make(), rehashes=name == "fsspec_on_disk", make=make, **_disk_access(root))
    elif name == "memory":
        fs = fsspec.filesystem("memory")
        root = f"/archive-{uuid.uuid4().hex}"

        def make() -> Archive:
            return Archive(f"memory://{root}")

        yield Backend(
            name,
            make(),
            plant=lambda path, data: fs.pipe_file(f"{root}/{path}", data),
            raw=lambda path: fs.cat_file(f"{root}/{path}"),
            files=lambda: sorted(p[len(root) + 1 :] for p in fs.find(root)),
            stamp=lambda path: fs.info(f"{root}/{path}")["created"],
            rehashes=True,
            make=make,
        )
        if fs.exists(root):
            fs.rm(root, recursive=True)
    else:
        server: SftpTestServer = request.getfixturevalue("sftp_server")
        options = sftp_options(server, tmp_path)
        url = f"sftp://county@127.0.0.1:{server.port}/archive"

        def make() -> Archive:
            return Archive(url, storage_options=options)

        root = server.root / "archive"  # the server's disk, behind the chroot
        root.mkdir()
        sftp_backend = Backend(name, make(), rehashes=True, make=make, **_disk_access(root))
        yield sftp_backend
        del sftp_backend.archive  # its SSH connection closes before the server stops


# --------------------------------------------------------------------------------------------
# Round trips, one object per content
# --------------------------------------------------------------------------------------------


def test_round_trip_of_chinese_content(backend: Backend) -> None:
    archive = backend.archive
    digests = [archive.put(content) for content in CONTENTS]
    assert digests == [sha(c) for c in CONTENTS]
    for content, digest in zip(CONTENTS, digests, strict=True):
        assert archive.exists(digest)
        assert archive.get(digest) == content
        assert backend.raw(rel(digest)) == content  # really there, at <root>/<sha[:2]>/<sha>
        assert str(archive.path(digest)).endswith(rel(digest))
    assert archive.get(digests[0]).decode("gbk").startswith("区划代码,学校名称")
    assert backend.files() == sorted(rel(d) for d in digests)  # no temporary file left behind
    missing = sha(b"never stored")
    assert not archive.exists(missing)
    with pytest.raises(FileNotFoundError):
        archive.get(missing)
    with pytest.raises(ValueError):
        archive.path("../../etc/passwd")


def test_same_bytes_twice_is_one_object_never_rewritten(backend: Backend) -> None:
    content = "怀远县全面改薄项目进展月报（2018年12月）".encode()
    digest = backend.archive.put(content)
    before = backend.stamp(rel(digest))
    assert backend.archive.put(content) == digest
    assert backend.make().put(content) == digest  # another writer, same bytes
    assert backend.files() == [rel(digest)]
    assert backend.stamp(rel(digest)) == before  # not rewritten


# --------------------------------------------------------------------------------------------
# Never overwrite; corruption is detected and kept
# --------------------------------------------------------------------------------------------


def test_different_bytes_under_a_hash_name_are_refused_and_kept(backend: Backend) -> None:
    content = "资金到位情况 2018年12月".encode()
    digest = sha(content)
    backend.plant(rel(digest), b"tampered")  # another size
    with pytest.raises(ArchiveCorrupt) as err:
        backend.archive.put(content)
    assert err.value.sha == digest and "bytes there" in str(err.value)
    assert backend.raw(rel(digest)) == b"tampered"
    with pytest.raises(ArchiveCorrupt):
        backend.archive.get(digest)
    assert backend.files() == [rel(digest)]


def test_same_size_tampering_is_caught_by_the_hash(backend: Backend) -> None:
    content = "进展月报 340321".encode()
    digest = sha(content)
    forged = bytes(reversed(content))
    backend.plant(rel(digest), forged)
    if backend.rehashes:
        with pytest.raises(ArchiveCorrupt, match="hash to"):
            backend.archive.put(content)
    else:  # local folder: put checks the size only (see the module docstring) ...
        assert backend.archive.put(content) == digest
        with pytest.raises(ArchiveCorrupt):  # ... unless told to re-hash
            Archive(backend.archive.root, verify_max_bytes=1 << 20).put(content)
    with pytest.raises(ArchiveCorrupt, match="hash to"):  # get always checks
        backend.archive.get(digest)
    assert backend.raw(rel(digest)) == forged


def test_the_move_never_replaces_an_existing_object(backend: Backend) -> None:
    """The last step of a write, when another object appeared after the archive looked."""
    content = "第二次上报".encode()
    digest = sha(content)
    backend.plant(rel(digest), b"placed first")
    store = backend.archive._store
    assert store.write_new(backend.archive.path(digest), content) is False
    assert backend.raw(rel(digest)) == b"placed first"
    assert backend.files() == [rel(digest)]  # the temporary upload was dropped


@pytest.mark.parametrize("planted", ["same bytes", "other bytes"])
def test_put_verifies_an_object_placed_by_a_concurrent_writer(
    backend: Backend, planted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive looks (nothing there), another writer places the object, the move is refused."""
    content = "并发写入".encode()
    digest = sha(content)
    backend.plant(rel(digest), content if planted == "same bytes" else "另一个文件的内容".encode())
    store = backend.archive._store
    real_size = store.size
    looks: list[str] = []

    def size(path: object) -> int | None:
        looks.append(str(path))
        return None if len(looks) == 1 else real_size(path)  # the first look comes too early

    monkeypatch.setattr(store, "size", size)
    if planted == "same bytes":
        assert backend.archive.put(content) == digest
    else:
        with pytest.raises(ArchiveCorrupt):
            backend.archive.put(content)
    assert backend.files() == [rel(digest)]
    assert len(looks) == 2  # looked, lost the move, looked again to verify


def test_concurrent_writers_of_the_same_bytes_leave_one_object(backend: Backend) -> None:
    content = "同一文件由多个进程同时归档".encode() * 100
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            archive = backend.make()
            for _ in range(3):
                assert archive.put(content) == sha(content)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert backend.files() == [rel(sha(content))]
    assert backend.archive.get(sha(content)) == content


def test_put_many_stores_a_batch_once_and_verifies_what_is_there(backend: Backend) -> None:
    """A fetch chunk's files in one call: new, repeated within the batch, and already present."""
    present = CONTENTS[0]
    backend.archive.put(present)
    batch = [CONTENTS[1], present, CONTENTS[3], CONTENTS[1], CONTENTS[2]]
    assert backend.archive.put_many(batch) == [sha(c) for c in batch]
    assert backend.files() == sorted(rel(sha(c)) for c in CONTENTS)  # no temporary file left
    for content in CONTENTS:
        assert backend.archive.get(sha(content)) == content

    forged = "篡改过的内容".encode()
    backend.plant(rel(sha(forged)), b"x" * len(forged) if backend.rehashes else b"short")
    with pytest.raises(ArchiveCorrupt):
        backend.archive.put_many([CONTENTS[0], forged])


def test_put_each_spoils_only_the_object_that_cannot_be_stored(backend: Backend) -> None:
    """A fetch chunk with one corrupt object among new and present ones: every other object is
    stored, the corrupt one is reported by its index and left as it is."""
    backend.archive.put(CONTENTS[0])
    forged = "篡改过的内容".encode()
    planted = b"x" * len(forged) if backend.rehashes else b"short"
    backend.plant(rel(sha(forged)), planted)
    batch = [CONTENTS[1], forged, CONTENTS[0], CONTENTS[2]]
    shas, failed = backend.archive.put_each(batch)
    assert shas == [sha(c) for c in batch]
    assert list(failed) == [1] and isinstance(failed[1], ArchiveCorrupt) and failed[1].sha == sha(forged)
    for content in (CONTENTS[0], CONTENTS[1], CONTENTS[2]):
        assert backend.archive.get(sha(content)) == content
    assert backend.files() == sorted(rel(sha(c)) for c in (*CONTENTS[:3], forged))
    with pytest.raises(ArchiveCorrupt):  # never repaired by overwriting
        backend.archive.get(sha(forged))
    assert backend.archive.put_each(CONTENTS[:3]) == ([sha(c) for c in CONTENTS[:3]], {})


def test_put_many_makes_the_bytes_durable_before_any_name_shows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local folder: one syncfs for every temporary file, before the first link; one after the
    last link; none per object. Without syncfs (not Linux), each file and folder is fsynced."""
    if archive_module._SYNCFS is None:
        pytest.skip("no syncfs in this C library")
    events: list[str] = []
    real_syncfs, real_link, real_fsync = archive_module._syncfs, os.link, os.fsync

    def syncfs(path: str) -> bool:
        events.append("syncfs")
        return real_syncfs(path)

    def link(src: str, dst: str, **kw: object) -> None:
        events.append("link")
        real_link(src, dst, **kw)

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(archive_module, "_syncfs", syncfs)
    monkeypatch.setattr(archive_module.os, "link", link)
    monkeypatch.setattr(archive_module.os, "fsync", fsync)
    contents = [f"第{i}号文件".encode() * 50 for i in range(20)]
    archive = Archive(tmp_path / "archive")
    assert archive.put_many(contents) == [sha(c) for c in contents]
    assert events == ["syncfs", *["link"] * 20, "syncfs"]
    assert all(archive.get(sha(c)) == c for c in contents)

    events.clear()
    monkeypatch.setattr(archive_module, "_SYNCFS", None)
    monkeypatch.setattr(archive_module, "_syncfs", real_syncfs)
    more = [f"第{i}号补报文件".encode() for i in range(3)]
    assert archive.put_many(more) == [sha(c) for c in more]
    folders = len({sha(c)[:2] for c in more})
    assert events == [*["fsync"] * 3, *["link"] * 3, *["fsync"] * folders]
    assert not list((tmp_path / "archive").rglob(".tmp-*"))


@pytest.mark.parametrize("planted", ["same bytes", "other bytes"])
def test_put_many_verifies_objects_placed_by_a_concurrent_writer(
    tmp_path: Path, planted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local folder: the batch looked (nothing there), another writer placed one object before
    the batch's link: that link is refused, the object is verified, the rest are stored."""
    contents = ["先到的文件".encode(), "后到的文件".encode()]
    archive = Archive(tmp_path / "archive")
    store = archive._store
    real_write_many = store.write_many

    def write_many(targets: list[str], data: list[bytes]) -> list[bool]:
        Path(targets[0]).parent.mkdir(parents=True, exist_ok=True)
        Path(targets[0]).write_bytes(data[0] if planted == "same bytes" else "另一个文件的内容".encode())
        return real_write_many(targets, data)

    monkeypatch.setattr(store, "write_many", write_many)
    if planted == "same bytes":
        assert archive.put_many(contents) == [sha(c) for c in contents]
    else:
        with pytest.raises(ArchiveCorrupt):
            archive.put_many(contents)
    assert archive.get(sha(contents[1])) == contents[1]  # the other object is stored either way
    assert sorted(
        str(p.relative_to(tmp_path / "archive")) for p in (tmp_path / "archive").rglob("*") if p.is_file()
    ) == sorted(rel(sha(c)) for c in contents)


def test_iteration_lists_the_hashes_only(backend: Backend) -> None:
    digests = sorted(backend.archive.put(c) for c in CONTENTS[:3])
    backend.plant(f"{digests[0][:2]}/.tmp-abandoned", b"half an upload")
    backend.plant(f"{digests[0][:2]}/notes.txt", b"not an object")
    backend.plant("README", b"not an object either")
    assert list(backend.archive) == digests


def test_iteration_of_an_empty_or_missing_archive(backend: Backend) -> None:
    assert list(backend.archive) == []


# --------------------------------------------------------------------------------------------
# SFTP specifics: host keys and passwords
# --------------------------------------------------------------------------------------------


def test_sftp_checks_the_host_key_and_the_password(sftp_server: SftpTestServer, tmp_path: Path) -> None:
    url = f"sftp://county@127.0.0.1:{sftp_server.port}/archive"
    other_host = tmp_path / "other_known_hosts"
    other_host.write_text(
        f"[127.0.0.1]:{sftp_server.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIGZpeGVkIGtleSBmb3IgdGVzdHMgMDEyMzQ1Njc4OQ==\n",
        encoding="utf-8",
    )
    with pytest.raises(Exception, match="(?i)host key"):
        Archive(url, storage_options={"password": PASSWORD, "known_hosts": str(other_host)})
    options = sftp_options(sftp_server, tmp_path)
    with pytest.raises(PermissionError):
        Archive(url, storage_options={**options, "password": "wrong"})
    # check_host_key: false turns the check off (a trusted network only), as for SFTP sources
    archive = Archive(url, storage_options={"password": PASSWORD, "check_host_key": False})
    digest = archive.put("县区上报".encode())
    assert (sftp_server.root / "archive" / rel(digest)).read_bytes() == "县区上报".encode()
    assert archive.location == url and PASSWORD not in repr(archive)


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def assert_settings_refused(
    env: pytest.MonkeyPatch, variable: str, value: str, message: str, secret: str
) -> None:
    """Settings with ``variable`` = ``value`` are refused with ``message``, and ``secret`` (a
    password inside the value) appears nowhere in the error."""
    env.setenv(variable, value)
    with pytest.raises(ValidationError) as err:
        Settings()
    assert message in str(err.value)
    assert secret not in str(err.value)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("GAIBAO_ARCHIVE_URL", "GAIBAO_ARCHIVE_STORAGE_OPTIONS", "GAIBAO_ARCHIVE_VERIFY_MAX_BYTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GAIBAO_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_default_archive_is_the_local_folder_under_home(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings()
    assert settings.archive_url is None
    assert settings.archive_location == str(tmp_path / "home" / "archive")
    archive = Archive.from_settings(settings)
    digest = archive.put("默认位置".encode())
    assert archive.is_local and archive.path(digest) == tmp_path / "home" / "archive" / rel(digest)
    # the location follows GAIBAO_HOME also on a copy of the settings
    moved = settings.model_copy(update={"home": tmp_path / "elsewhere"})
    assert Archive.from_settings(moved).path(digest) == tmp_path / "elsewhere" / "archive" / rel(digest)


def test_file_url_is_a_local_folder(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("GAIBAO_ARCHIVE_URL", f"file://{tmp_path / 'shared' / 'archive'}")
    archive = Archive.from_settings(Settings())
    digest = archive.put(CONTENTS[0])
    assert archive.is_local
    assert (tmp_path / "shared" / "archive" / rel(digest)).read_bytes() == CONTENTS[0]


def test_memory_url_with_options(env: pytest.MonkeyPatch) -> None:
    root = f"memory://settings-{uuid.uuid4().hex}"
    env.setenv("GAIBAO_ARCHIVE_URL", root)
    env.setenv("GAIBAO_ARCHIVE_STORAGE_OPTIONS", "{}")
    archive = Archive.from_settings(Settings())
    digest = archive.put(CONTENTS[1])
    assert not archive.is_local and archive.location == root
    assert fsspec.filesystem("memory").cat_file(f"{root}/{rel(digest)}") == CONTENTS[1]
    fsspec.filesystem("memory").rm(root, recursive=True)


def test_verify_limit_from_the_environment(env: pytest.MonkeyPatch) -> None:
    """GAIBAO_ARCHIVE_VERIFY_MAX_BYTES=0: objects in place are checked by size only; get still hashes."""
    root = f"memory://verify-{uuid.uuid4().hex}"
    env.setenv("GAIBAO_ARCHIVE_URL", root)
    assert Archive.from_settings(Settings()).verify_max_bytes == 16 * 2**20
    env.setenv("GAIBAO_ARCHIVE_VERIFY_MAX_BYTES", "0")
    archive = Archive.from_settings(Settings())
    content = "进展月报 340321".encode()
    fsspec.filesystem("memory").pipe_file(f"{root}/{rel(sha(content))}", bytes(reversed(content)))
    assert archive.put(content) == sha(content)  # same size: not re-hashed
    with pytest.raises(ArchiveCorrupt):
        archive.get(sha(content))
    fsspec.filesystem("memory").rm(root, recursive=True)
    env.setenv("GAIBAO_ARCHIVE_VERIFY_MAX_BYTES", "-1")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("syntax", ["json", "yaml"])
def test_sftp_archive_from_the_environment(
    syntax: str, env: pytest.MonkeyPatch, sftp_server: SftpTestServer, tmp_path: Path
) -> None:
    """The production set-up: URL and secret options from the environment, nothing in the repo."""
    known_hosts = sftp_server.write_known_hosts(tmp_path / "known_hosts")
    options = (
        json.dumps({"password": PASSWORD, "known_hosts": str(known_hosts)}, ensure_ascii=False)
        if syntax == "json"
        else f"password: {PASSWORD}\nknown_hosts: {known_hosts}\n"
    )
    env.setenv("GAIBAO_ARCHIVE_URL", f"sftp://county@127.0.0.1:{sftp_server.port}/srv/archive")
    env.setenv("GAIBAO_ARCHIVE_STORAGE_OPTIONS", options)
    settings = Settings()
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    archive = Archive.from_settings(settings)
    digests = [archive.put(c) for c in CONTENTS]
    on_server = sftp_server.root / "srv" / "archive"
    for content, digest in zip(CONTENTS, digests, strict=True):
        assert (on_server / rel(digest)).read_bytes() == content
    assert list(Archive.from_settings(settings)) == sorted(digests)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "GAIBAO_ARCHIVE_URL",
            f"sftp://county:{PASSWORD}@127.0.0.1:2222/archive",
            "must not carry a password",
        ),
        ("GAIBAO_ARCHIVE_URL", "nosuchfs://bucket/archive", "not an fsspec protocol"),
        ("GAIBAO_ARCHIVE_URL", "sftp://county@127.0.0.1:notaport/archive", "Port could not be cast"),
        ("GAIBAO_ARCHIVE_STORAGE_OPTIONS", f"[{PASSWORD!r}]", "must be a mapping"),
        (
            "GAIBAO_ARCHIVE_STORAGE_OPTIONS",
            f"password: {PASSWORD}\n  known_hosts: [",
            "neither JSON nor YAML (line",
        ),
    ],
)
def test_bad_archive_settings_are_refused_without_echoing_secrets(
    env: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    assert_settings_refused(env, variable, value, message, PASSWORD)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, {}),
        ("", {}),
        (
            '{"key": "AK", "secret": "SK", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}',
            {"key": "AK", "secret": "SK", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}},
        ),
        (
            "username: county\npassword: 密码\nknown_hosts: /etc/gaibao/known_hosts\n",
            {"username": "county", "password": "密码", "known_hosts": "/etc/gaibao/known_hosts"},
        ),
        ('{"password": "a\tb"}', {"password": "a\tb"}),  # JSON that YAML 1.1 would refuse
    ],
)
def test_parse_storage_options(text: str | None, expected: dict[str, object]) -> None:
    assert parse_storage_options(text) == expected


def test_an_unset_archive_url_ignores_blank_values(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("GAIBAO_ARCHIVE_URL", "  ")
    assert Settings().archive_location == str(tmp_path / "home" / "archive")
