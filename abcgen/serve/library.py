"""The tune library behind `abcgen serve`: one SQLite file, written only inside transactions.

Each tune keeps its ABC, its title, the settings that made it (model, seed, temperature,
options, as JSON), when it was saved, a star rating (0-5) and the musician's notes. A crash
or Ctrl-C between two saves loses nothing that was saved: every change is one transaction,
and the file uses SQLite's write-ahead log.

    library = Library("tunes.sqlite3")
    tune_id = library.add("X:1\\nT:Morning\\nM:6/8\\nK:D\\n...", settings={"seed": 3})
    library.search("morning")            # [{id, title, created, rating, ...}]
    library.tunebook()                   # every tune as one ABC text, X:1, X:2, ...
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from abcgen.errors import AbcgenError

SCHEMA = """
CREATE TABLE IF NOT EXISTS tunes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    title    TEXT NOT NULL,
    abc      TEXT NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}',
    created  TEXT NOT NULL,
    rating   INTEGER NOT NULL DEFAULT 0 CHECK (rating BETWEEN 0 AND 5),
    notes    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS tunes_title ON tunes (title COLLATE NOCASE);
"""
LIST_COLUMNS = "id, title, created, rating, notes, settings"


def default_library_path() -> Path:
    """$ABCGEN_LIBRARY, or library.sqlite3 in the user's data folder
    ($XDG_DATA_HOME/abcgen, by default ~/.local/share/abcgen)."""
    if os.environ.get("ABCGEN_LIBRARY"):
        return Path(os.environ["ABCGEN_LIBRARY"])
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "abcgen" / "library.sqlite3"


def title_of(abc: str) -> str:
    found = re.search(r"^T:(.*)$", abc, re.M)
    return (found[1].strip() if found else "") or "Untitled"


class Library:
    """The tunes a musician kept, in one SQLite file (created on first use)."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path) if path else default_library_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise AbcgenError(
                f"cannot open the tune library {self.path}: {error}; choose another file with --library"
            ) from None

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose block is one transaction: committed at its end, rolled back on
        an error."""
        with closing(sqlite3.connect(self.path, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            with db:
                yield db

    def add(
        self, abc: str, title: str | None = None, settings: dict | None = None, rating: int = 0, notes: str = ""
    ) -> int:
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.connect() as db:
            cursor = db.execute(
                "INSERT INTO tunes (title, abc, settings, created, rating, notes) VALUES (?, ?, ?, ?, ?, ?)",
                (title or title_of(abc), abc, json.dumps(settings or {}, sort_keys=True), created, rating, notes),
            )
            assert cursor.lastrowid is not None  # an INSERT sets it
            return cursor.lastrowid

    def get(self, tune_id: int) -> dict | None:
        with self.connect() as db:
            row = db.execute(f"SELECT {LIST_COLUMNS}, abc FROM tunes WHERE id = ?", (tune_id,)).fetchone()
        return _as_dict(row) if row else None

    def update(self, tune_id: int, **changes) -> bool:
        """Change some of abc, title, rating, notes; False when there is no such tune. New ABC
        without a title brings its own T: as the title."""
        allowed = {
            name: value
            for name, value in changes.items()
            if name in ("abc", "title", "rating", "notes") and value is not None
        }
        if "abc" in allowed and "title" not in allowed:
            allowed["title"] = title_of(allowed["abc"])
        if not allowed:
            return self.get(tune_id) is not None
        assignments = ", ".join(f"{name} = ?" for name in allowed)
        with self.connect() as db:
            cursor = db.execute(f"UPDATE tunes SET {assignments} WHERE id = ?", (*allowed.values(), tune_id))
            return cursor.rowcount == 1

    def delete(self, tune_id: int) -> bool:
        with self.connect() as db:
            return db.execute("DELETE FROM tunes WHERE id = ?", (tune_id,)).rowcount == 1

    def search(self, text: str = "", limit: int = 200) -> list[dict]:
        """Tunes whose title contains text (any case), newest first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self.connect() as db:
            rows = db.execute(
                f"SELECT {LIST_COLUMNS} FROM tunes WHERE title LIKE ? ESCAPE '\\' ORDER BY id DESC LIMIT ?",
                (pattern, limit),
            ).fetchall()
        return [_as_dict(row) for row in rows]

    def count(self) -> int:
        with self.connect() as db:
            return db.execute("SELECT COUNT(*) FROM tunes").fetchone()[0]

    def tunebook(self) -> str:
        """Every tune, oldest first, as one ABC tunebook: numbered X:1, X:2, ..., each
        with its rating and notes as N: lines, separated by blank lines."""
        with self.connect() as db:
            rows = db.execute("SELECT id, abc, rating, notes FROM tunes ORDER BY id").fetchall()
        tunes = []
        for number, row in enumerate(rows, 1):
            lines = row["abc"].strip().split("\n")
            if lines and lines[0].startswith("X:"):
                lines = lines[1:]
            extra = [f"N:rating {row['rating']}/5"] if row["rating"] else []
            extra += [f"N:{line}" for line in row["notes"].splitlines() if line.strip()]
            key_at = next((i for i, line in enumerate(lines) if line.startswith("K:")), len(lines))
            tunes.append("\n".join([f"X:{number}"] + lines[:key_at] + extra + lines[key_at:]))
        return "\n\n".join(tunes) + ("\n" if tunes else "")


def _as_dict(row: sqlite3.Row) -> dict:
    found = dict(row)
    found["settings"] = json.loads(found.get("settings") or "{}")
    return found
