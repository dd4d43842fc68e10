"""Where jobs live: an embedded SQLite database (WAL) for their state, and one folder per job for its input
file, each finished page's result JSON and each page's rendered image.

A page's files are written (atomically) before its row is committed, so a row always has its files; a
server killed in between redoes that page. Pages finish in order, so a job resumes at ``pages_done``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

UNFINISHED = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL, priority TEXT NOT NULL,
    request TEXT NOT NULL, is_pdf INTEGER NOT NULL, pages_total INTEGER NOT NULL, pages_done INTEGER NOT NULL DEFAULT 0,
    error TEXT, webhook_url TEXT, webhook_secret TEXT, webhook_status TEXT,
    created REAL NOT NULL, started REAL, finished REAL
);
CREATE TABLE IF NOT EXISTS pages (
    job_id TEXT NOT NULL, n INTEGER NOT NULL, error TEXT, width INTEGER, height INTEGER, timings TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
);
"""


@dataclass
class Job:
    id: str
    owner: str
    status: str
    priority: str
    request: Dict[str, Any]  # the request body without its file
    is_pdf: bool
    pages_total: int
    pages_done: int
    error: Optional[str]
    webhook_url: Optional[str]
    webhook_secret: Optional[str]
    webhook_status: Optional[str]
    created: float
    started: Optional[float]
    finished: Optional[float]


class Store:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, shared by the event loop and worker threads
        self._db = sqlite3.connect(folder / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> List[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ---- jobs ----

    def job_folder(self, job_id: str) -> Path:
        return self.folder / job_id

    def add(self, job: Job, data: bytes) -> None:
        folder = self.job_folder(job.id)
        folder.mkdir()
        _write(folder / "input", data)
        self._run(
            "INSERT INTO jobs (id, owner, status, priority, request, is_pdf, pages_total, pages_done, webhook_url,"
            " webhook_secret, created) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
            (job.id, job.owner, job.status, job.priority, json.dumps(job.request), int(job.is_pdf), job.pages_total,
             job.webhook_url, job.webhook_secret, job.created),
        )

    def get(self, job_id: str) -> Optional[Job]:
        rows = self._run("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def input(self, job_id: str) -> bytes:
        return (self.job_folder(job_id) / "input").read_bytes()

    def input_size(self, job_id: str) -> int:
        return (self.job_folder(job_id) / "input").stat().st_size

    def unfinished(self) -> List[Job]:
        """Queued and running jobs, interactive ones first, then oldest first."""
        rows = self._run(
            "SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY priority = 'batch', created")
        return [_job(row) for row in rows]

    def unsent_webhooks(self) -> List[Job]:
        """Finished jobs whose webhook the last server didn't get to send."""
        rows = self._run("SELECT * FROM jobs WHERE status IN ('done', 'failed', 'cancelled') AND webhook_url IS NOT NULL"
                         " AND webhook_status IS NULL")
        return [_job(row) for row in rows]

    def count_unfinished(self, owner: str) -> int:
        return self._run("SELECT COUNT(*) FROM jobs WHERE owner = ? AND status IN ('queued', 'running')", (owner,))[0][0]

    def set_status(self, job_id: str, status: str, error: Optional[str] = None) -> bool:
        """False when the job had already finished (a cancel won the race, or the job is gone)."""
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "UPDATE jobs SET status = ?, error = COALESCE(?, error),"
                " started = CASE WHEN ? = 'running' THEN COALESCE(started, ?) ELSE started END,"
                " finished = CASE WHEN ? IN ('done', 'failed', 'cancelled') THEN ? ELSE finished END"
                " WHERE id = ? AND status IN ('queued', 'running')",
                (status, error, status, now, status, now, job_id),
            )
            return cursor.rowcount == 1

    def set_webhook_status(self, job_id: str, status: str) -> None:
        self._run("UPDATE jobs SET webhook_status = ? WHERE id = ?", (status, job_id))

    def expired(self, before: float) -> List[str]:
        return [row[0] for row in self._run(
            "SELECT id FROM jobs WHERE status IN ('done', 'failed', 'cancelled') AND finished < ?", (before,))]

    def delete(self, job_id: str) -> None:
        self._run("DELETE FROM pages WHERE job_id = ?", (job_id,))
        self._run("DELETE FROM jobs WHERE id = ?", (job_id,))
        shutil.rmtree(self.job_folder(job_id), ignore_errors=True)

    # ---- pages ----

    def add_page(self, job_id: str, n: int, item: Dict[str, Any], image: Optional[bytes], error: Optional[str],
                 size: Optional[tuple], timings: Dict[str, float]) -> None:
        """Page ``n`` (0-based) finished: its files, then its row and the job's count in one transaction."""
        folder = self.job_folder(job_id)
        _write(folder / f"page-{n}.json", json.dumps(item, ensure_ascii=False).encode())
        if image is not None:
            _write(folder / f"page-{n}.jpg", image)
        width, height = size or (None, None)
        with self._lock:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(
                    "INSERT OR REPLACE INTO pages (job_id, n, error, width, height, timings) VALUES (?, ?, ?, ?, ?, ?)",
                    (job_id, n, error, width, height, json.dumps(timings)))
                self._db.execute("UPDATE jobs SET pages_done = ? WHERE id = ?", (n + 1, job_id))

    def pages(self, job_id: str, start: int = 0) -> List[Dict[str, Any]]:
        rows = self._run("SELECT * FROM pages WHERE job_id = ? AND n >= ? ORDER BY n", (job_id, start))
        return [{"page": row["n"], "error": row["error"], "width": row["width"], "height": row["height"],
                 "timings": json.loads(row["timings"])} for row in rows]

    def page_item(self, job_id: str, n: int) -> Dict[str, Any]:
        return json.loads((self.job_folder(job_id) / f"page-{n}.json").read_bytes())

    def page_image(self, job_id: str, n: int) -> Optional[Path]:
        path = self.job_folder(job_id) / f"page-{n}.jpg"
        return path if path.is_file() else None


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["request"] = json.loads(values["request"])
    values["is_pdf"] = bool(values["is_pdf"])
    return Job(**values)


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(data)
    os.replace(temporary, path)
