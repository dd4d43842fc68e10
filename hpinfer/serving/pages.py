"""Pages handed to an engine instance on the same machine through shared memory instead of inside the call.

A call's pixels are most of its bytes: sent in the call they are copied into a message, over a socket and out
again, or through Ray's object store and its bookkeeping, which cost more than the rest of the call
(benchmarks/RESULTS.md, 2026-12-05 05:00). Here the front-end writes them into a memory file of its own thread
(``memfd``, no name in any file system, freed when the front-end exits whatever ends it) and sends a
``SharedPages`` note; the instance opens that file through ``/proc/<pid>/fd`` and copies the pages out. An
instance on another machine (or that may not open the file) finds a different file or none there: ``read``
says so with ``None``, and the front-end sends that call's pixels in the call itself.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
import uuid
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger("hpinfer.serving")
MIN_BYTES = 4 << 20  # a front-end thread's file, grown when a batch needs more
KEEP_BYTES = 32 << 20  # a file grown above this is dropped once its call is answered: no large file held idle


class SharedPages(NamedTuple):
    """Where a call's pages are: the front-end's process and file, and each page's (offset, shape, dtype)."""

    pid: int
    fd: int
    name: str
    layout: Tuple[Tuple[int, Tuple[int, ...], str], ...]


class _File:
    def __init__(self, size: int):
        self.name = f"hpinfer-pages-{uuid.uuid4().hex}"
        self.fd = os.memfd_create(self.name)
        try:
            os.posix_fallocate(self.fd, 0, size)  # no room is an OSError now, not a SIGBUS when written
            self.map = mmap.mmap(self.fd, size)
        except OSError:
            os.close(self.fd)
            raise
        self.size = size

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


class PageWriter:
    """The front-end's side: one file per thread (each thread has one call in flight at a time), reused."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._files: List[_File] = []

    def write(self, images: Sequence[np.ndarray]) -> Optional[SharedPages]:
        """The pages in this thread's file, or None when there is no memory for them (then they go in the call)."""
        nbytes = sum(image.nbytes for image in images)
        file = getattr(self._local, "file", None)
        if file is None or file.size < nbytes:
            try:
                new = _File(max(nbytes, MIN_BYTES))
            except OSError as err:
                log.info("pages go in the call (no shared memory for %d bytes: %s)", nbytes, err)
                return None
            if file is not None:
                self._drop(file)
            with self._lock:
                self._files.append(new)
            file = self._local.file = new
        layout, offset = [], 0
        for image in images:
            np.ndarray(image.shape, image.dtype, buffer=file.map, offset=offset)[...] = image
            layout.append((offset, image.shape, image.dtype.str))
            offset += image.nbytes
        return SharedPages(os.getpid(), file.fd, file.name, tuple(layout))

    def done(self) -> None:
        """This thread's call is answered: a file grown for a large batch is not kept for the next one."""
        file = getattr(self._local, "file", None)
        if file is not None and file.size > KEEP_BYTES:
            self._local.file = None
            self._drop(file)

    def _drop(self, file: _File) -> None:
        with self._lock:
            if file not in self._files:  # closed already (``close``)
                return
            self._files.remove(file)
        file.close()

    def close(self) -> None:
        with self._lock:
            files, self._files = self._files, []
        for file in files:
            file.close()


def read(pages: SharedPages) -> Optional[List[np.ndarray]]:
    """The instance's side: a copy of the pages (the front-end reuses its file for its next call), or None
    when the front-end's file is not reachable from here (another machine, another user)."""
    path = f"/proc/{pages.pid}/fd/{pages.fd}"
    try:
        if os.readlink(path) != f"/memfd:{pages.name} (deleted)":  # another process's file, same numbers
            return None
        with open(path, "rb") as file:
            view = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError:
        return None
    try:
        return [np.frombuffer(view, np.dtype(dtype), int(np.prod(shape)), offset).reshape(shape).copy()
                for offset, shape, dtype in pages.layout]
    finally:
        view.close()
