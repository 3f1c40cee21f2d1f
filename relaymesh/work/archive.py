"""Retention archives: finished workflows as gzip JSON lines, one file per UTC day.

A workflow goes to the file of the UTC day it finished (its ``updated_at_ms``):
``relaymesh-archive-YYYY-MM-DD.jsonl.gz``, one archive document (``store/transfer.py``)
per line. Each retention batch appends one gzip member (gzip allows members back to
back; every reader sees one stream) and is fsynced, the directory too when the file
is new, before the batch's delete commits: a workflow is deleted only once its copy
is on disk.

A crash mid-append can leave a torn member at the end of a file, and later appends
go after it. ``read_documents`` then skips to the next member header, so every
member that was fsynced stays readable; the torn batch was never deleted (its
delete comes after the fsync), so it is archived again by the next pass.
"""

from __future__ import annotations

import gzip
import json
import mmap
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["ArchiveReader", "archive_files", "archive_name", "write_documents"]

_PREFIX = "relaymesh-archive-"
_SUFFIX = ".jsonl.gz"
_GZIP_MAGIC = b"\x1f\x8b\x08"


def archive_name(finished_at_ms: int) -> str:
    """The file a workflow finished at ``finished_at_ms`` goes to."""
    day = datetime.fromtimestamp(finished_at_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    return f"{_PREFIX}{day}{_SUFFIX}"


def write_documents(directory: str, docs: Sequence[dict[str, Any]]) -> list[str]:
    """Append ``docs`` to their day files under ``directory`` (made if missing), each
    file's new member fsynced before this returns. Raises ``OSError`` (nothing may be
    deleted then). Returns the files written."""
    by_file: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_file.setdefault(archive_name(int(doc["workflow"]["updated_at_ms"])), []).append(doc)
    os.makedirs(directory, exist_ok=True)
    written = []
    for name, group in sorted(by_file.items()):
        path = os.path.join(directory, name)
        lines = "".join(json.dumps(d, separators=(",", ":"), default=str) + "\n" for d in group)
        member = gzip.compress(lines.encode("utf-8"), mtime=0)
        created = not os.path.exists(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(member)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                # Leave no partial member behind an error we saw (disk full...).
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        if created:
            _fsync_dir(directory)
        written.append(path)
    return written


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_PIECE = 1 << 16


@dataclass(slots=True)
class ArchiveReader:
    """Reads the documents of one archive file, member by member (the file is mapped,
    not loaded); ``damaged`` counts torn or corrupt stretches skipped and lines that
    are not archive documents."""

    path: str
    damaged: int = 0

    def documents(self) -> Iterator[dict[str, Any]]:
        with open(self.path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                for chunk in self._members(data):
                    yield from self._parse(chunk)

    def _parse(self, chunk: bytes) -> Iterator[dict[str, Any]]:
        for line in chunk.splitlines():
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                self.damaged += 1
                continue
            if isinstance(doc, dict) and isinstance(doc.get("workflow"), dict):
                yield doc
            else:
                self.damaged += 1

    def _members(self, data: mmap.mmap) -> Iterator[bytes]:
        size = len(data)
        view = memoryview(data)
        try:
            pos = 0
            while pos < size:
                if data[pos : pos + len(_GZIP_MAGIC)] != _GZIP_MAGIC:
                    self.damaged += 1
                    pos = _next_member(data, pos + 1)
                    continue
                # Fed in pieces so that what is left after a member's end is small.
                inflate = zlib.decompressobj(wbits=31)
                parts: list[bytes] = []
                cur = pos
                try:
                    while not inflate.eof and cur < size:
                        piece = view[cur : cur + _PIECE]
                        parts.append(inflate.decompress(piece))
                        cur += len(piece)
                except zlib.error:
                    pass
                if not inflate.eof:  # torn or corrupt: resume at the next member header
                    self.damaged += 1
                    pos = _next_member(data, pos + 1)
                    continue
                yield b"".join(parts)
                pos = cur - len(inflate.unused_data)
        finally:
            view.release()


def _next_member(data: mmap.mmap, start: int) -> int:
    found = data.find(_GZIP_MAGIC, start)
    return len(data) if found < 0 else found


def archive_files(path: str) -> list[str]:
    """``path`` itself, or the archive files of a directory in day order."""
    if os.path.isdir(path):
        return sorted(
            os.path.join(path, n)
            for n in os.listdir(path)
            if n.startswith(_PREFIX) and n.endswith(_SUFFIX)
        )
    return [path]
