"""Sessions: a conversation kept between runs, committed turn by turn.

A `Session` is anything with these four methods; `SQLiteSession` is the embedded default.
`Agent.run(prompt, session=...)` loads the conversation, runs, and appends each completed turn
(the assistant's message with its tool results, or the final answer) atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from agent.errors import SessionBusyError, SessionError

__all__ = ["SQLiteSession", "Session", "SessionInfo", "default_sessions_path"]

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 2**20

_SCHEMA = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    turn INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX messages_by_session ON messages(session_id, id);
CREATE TABLE locks (
    session_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    identity TEXT NOT NULL,
    started REAL NOT NULL
);
"""

# Lock tokens held by runs in this process: a lock row carrying our pid is live only if its
# token is here (a row left by an earlier holder with a reused pid, or a lost release, is not).
_HELD: set[str] = set()
_HELD_GUARD = threading.Lock()
_HOST = socket.gethostname()


@runtime_checkable
class Session(Protocol):
    """Where a conversation is kept between runs."""

    async def load(self) -> list[dict[str, Any]]:
        """Return the conversation so far (OpenAI-format messages, no system prompt)."""
        ...

    async def append(self, messages: list[dict[str, Any]]) -> None:
        """Add one completed turn's messages, all or none."""
        ...

    async def clear(self) -> None:
        """Forget the conversation."""
        ...

    def lock(self) -> AbstractAsyncContextManager[None]:
        """Hold the session for one run; raise `SessionBusyError` if another run holds it."""
        ...


class SessionInfo(NamedTuple):
    """One stored session, as `SQLiteSession.list_sessions` reports it."""

    id: str
    messages: int
    updated: float
    """When the last turn was committed, in seconds since the epoch."""


def default_sessions_path() -> Path:
    """Return where the command line keeps sessions: `$QWENLOOP_SESSIONS`, else the data dir.

    The data directory is `$XDG_DATA_HOME/qwenloop` (default `~/.local/share/qwenloop`) on
    Linux and other Unixes, `~/Library/Application Support/qwenloop` on macOS and
    `%LOCALAPPDATA%/qwenloop` on Windows; the file is `sessions.db` in it.
    """
    override = os.environ.get("QWENLOOP_SESSIONS")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        # The XDG spec says to ignore a relative path.
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "qwenloop" / "sessions.db"


class SQLiteSession:
    """A session in a SQLite file (stdlib `sqlite3`, WAL mode); many sessions share one file.

    Every database call runs in a worker thread, never on the event loop, on a connection
    opened for that call. Each `append` is one transaction, so a crash or `kill -9` leaves the
    conversation as of the last complete turn. Messages are stored as JSON text, exactly as
    given, in order.

    Locking: `lock()` writes a row (a random token, pid, host name, the process's identity and
    the time) in the same file, inside an immediate transaction, and deletes it when the run
    ends. A second run finds the row and gets `SessionBusyError`, naming the holder; runs are
    refused, not queued, so a caller never waits on a run it cannot see. A row is stale, and
    taken over, when its holder is gone: its pid no longer exists on this host (`os.kill(pid,
    0)`), is a zombie, or now belongs to another process (on Linux the boot id and the
    process's start time are compared, so a reused pid or a reboot is noticed); a row with our
    own pid counts only if this process still holds its token. This needs no renewal and
    frees a lock the moment its holder dies, however it died; a lease would keep a killed
    run's session blocked until it expired, and needs a timer to renew it during long tool
    calls. A row from another host is treated as stale: SQLite's WAL mode does not work
    across hosts (network file systems), so such a row can only come from a copied file. For
    the same reason, processes in different PID namespaces (containers sharing a volume) are
    not told apart; give each its own file.

    Args:
        path: The database file; created, with its directory, on first use.
        session_id: The conversation's name within the file.
        max_message_bytes: A message larger than this (as UTF-8 JSON) is refused with
            `SessionError`, and its turn is not stored.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        session_id: str,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise ValueError(f"session_id must be a non-empty string, got {session_id!r}")
        self.path = Path(path)
        self.session_id = session_id
        self.max_message_bytes = max_message_bytes
        self._token: str | None = None

    def __repr__(self) -> str:
        return f"SQLiteSession({str(self.path)!r}, {self.session_id!r})"

    async def load(self) -> list[dict[str, Any]]:
        """Return the conversation so far, oldest message first.

        Raises:
            SessionError: The file is not a session store, or a stored message is corrupt.
        """
        return await asyncio.to_thread(self._load)

    async def append(self, messages: list[dict[str, Any]]) -> None:
        """Store one completed turn's messages in one transaction: all of them or none.

        Raises:
            SessionBusyError: Another run holds the session.
            SessionError: A message is not JSON-serialisable or too large, or the store failed.
        """
        rows = [self._encode(m) for m in messages]
        if rows:
            await asyncio.to_thread(self._append, rows)

    async def clear(self) -> None:
        """Forget the conversation (the session disappears from `list_sessions`).

        Raises:
            SessionBusyError: Another run holds the session.
        """
        await asyncio.to_thread(self._clear)

    def lock(self) -> AbstractAsyncContextManager[None]:
        """Hold the session for one run; see the class docstring for how.

        Raises:
            SessionBusyError: Another run, in this process or another, holds it.
        """
        return self._locked()

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        token = uuid.uuid4().hex
        acquiring = asyncio.ensure_future(asyncio.to_thread(self._acquire, token))
        try:
            await asyncio.shield(acquiring)
        except BaseException:
            if not acquiring.done():
                # Cancelled while the thread runs on: undo what it did once it ends.
                acquiring.add_done_callback(lambda _: self._abandon(token))
            raise
        self._token = token
        try:
            yield
        finally:
            self._token = None
            with _HELD_GUARD:
                _HELD.discard(token)  # a row left behind is now stale, even in this process
            # A failed release must not hide the run's own error; the row is stale anyway.
            with contextlib.suppress(SessionError):
                await asyncio.to_thread(self._release, token)

    @staticmethod
    def list_sessions(path: str | os.PathLike[str]) -> list[SessionInfo]:
        """Return the sessions stored in `path`, most recently updated first (blocking).

        Raises:
            SessionError: The file is not a session store.
        """
        if not Path(path).exists():
            return []
        with _connect(Path(path)) as db:
            rows = db.execute(
                "SELECT s.id, COUNT(m.id), s.updated FROM sessions s "
                "LEFT JOIN messages m ON m.session_id = s.id "
                "GROUP BY s.id ORDER BY s.updated DESC, s.id"
            ).fetchall()
        return [SessionInfo(str(i), int(n), float(u)) for i, n, u in rows]

    @staticmethod
    def delete(path: str | os.PathLike[str], session_id: str) -> bool:
        """Delete a session from `path` (blocking); return False if there was none.

        Raises:
            SessionBusyError: A run holds the session.
        """
        if not Path(path).exists():
            return False
        return SQLiteSession(path, session_id)._clear()

    def _encode(self, message: dict[str, Any]) -> str:
        if not isinstance(message, dict):
            raise SessionError(
                f"session {self.session_id!r}: a message must be a dict, got {message!r:.80}"
            )
        try:
            text = json.dumps(message, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SessionError(
                f"session {self.session_id!r}: a {message.get('role')!r} message cannot be "
                f"stored as JSON: {exc}"
            ) from exc
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.max_message_bytes:
            raise SessionError(
                f"session {self.session_id!r}: a {message.get('role')!r} message of {size} bytes "
                f"is over the limit of {self.max_message_bytes} (max_message_bytes); its turn "
                "was not stored"
            )
        return text

    def _load(self) -> list[dict[str, Any]]:
        with _connect(self.path) as db:
            rows = db.execute(
                "SELECT id, message FROM messages WHERE session_id = ? ORDER BY id",
                (self.session_id,),
            ).fetchall()
        out = []
        for row_id, text in rows:
            try:
                message = json.loads(text)
            except (TypeError, ValueError):
                message = None
            if not isinstance(message, dict) or "role" not in message:
                raise SessionError(
                    f"session {self.session_id!r} in {self.path}: stored message {row_id} is "
                    "corrupt (not a JSON message); delete the session or restore the file"
                )
            out.append(message)
        return out

    def _append(self, rows: list[str]) -> None:
        now = time.time()
        with _connect(self.path) as db, _transaction(db):
            self._check_holder(db)
            db.execute(
                "INSERT INTO sessions (id, created, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET updated = excluded.updated",
                (self.session_id, now, now),
            )
            (turn,) = db.execute(
                "SELECT COALESCE(MAX(turn), 0) + 1 FROM messages WHERE session_id = ?",
                (self.session_id,),
            ).fetchone()
            db.executemany(
                "INSERT INTO messages (session_id, turn, message) VALUES (?, ?, ?)",
                [(self.session_id, turn, text) for text in rows],
            )

    def _clear(self) -> bool:
        with _connect(self.path) as db, _transaction(db):
            self._check_holder(db)
            db.execute("DELETE FROM messages WHERE session_id = ?", (self.session_id,))
            gone = db.execute("DELETE FROM sessions WHERE id = ?", (self.session_id,)).rowcount
        return bool(gone)

    def _check_holder(self, db: sqlite3.Connection) -> None:
        """Refuse a write while another run holds the session, or after ours lost it."""
        row = db.execute(
            "SELECT token, pid, host, identity, started FROM locks WHERE session_id = ?",
            (self.session_id,),
        ).fetchone()
        if self._token is not None:
            if row is None or row[0] != self._token:
                raise SessionError(
                    f"session {self.session_id!r}: this run's lock was taken over by another "
                    "run; nothing more of it is stored"
                )
        elif row is not None and _alive(row):
            raise self._busy(row)

    def _acquire(self, token: str) -> None:
        identity = _identity(os.getpid()) or ""
        with _connect(self.path) as db, _transaction(db):
            row = db.execute(
                "SELECT token, pid, host, identity, started FROM locks WHERE session_id = ?",
                (self.session_id,),
            ).fetchone()
            if row is not None and _alive(row):
                raise self._busy(row)
            # Registered before the commit: from the moment the row is visible, a run in this
            # process must see it as live.
            with _HELD_GUARD:
                _HELD.add(token)
            try:
                db.execute(
                    "INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?, ?)",
                    (self.session_id, token, os.getpid(), _HOST, identity, time.time()),
                )
            except BaseException:
                with _HELD_GUARD:
                    _HELD.discard(token)
                raise

    def _abandon(self, token: str) -> None:
        with _HELD_GUARD:
            _HELD.discard(token)

        def release() -> None:
            with contextlib.suppress(SessionError):
                self._release(token)

        threading.Thread(target=release, name="qwenloop-session-release", daemon=True).start()

    def _release(self, token: str) -> None:
        with _connect(self.path) as db, _transaction(db):
            db.execute(
                "DELETE FROM locks WHERE session_id = ? AND token = ?", (self.session_id, token)
            )

    def _busy(self, row: tuple[Any, ...]) -> SessionBusyError:
        _token, pid, host, _identity, started = row
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        where = f"in this process ({pid})" if pid == os.getpid() else f"in process {pid} on {host}"
        return SessionBusyError(
            f"session {self.session_id!r} is in use by another run {where} (since {since}); "
            "wait for it to finish, or use another session"
        )


def _alive(row: tuple[Any, ...]) -> bool:
    """Whether the run that wrote a lock row still exists (see `SQLiteSession`)."""
    token, pid, host, identity, _started = row
    if host != _HOST:
        return False
    if pid == os.getpid():
        return token in _HELD
    if not _pid_exists(pid):
        return False
    now = _identity(pid)
    if now == "zombie":
        return False
    return not (identity and now and now != identity)


def _pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":  # pragma: no cover - os.kill(pid, 0) terminates on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x100000, False, pid)  # SYNCHRONIZE
        if not handle:
            return kernel32.GetLastError() == 5  # access denied: it exists
        try:
            return bool(kernel32.WaitForSingleObject(handle, 0) == 0x102)  # still running
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _identity(pid: int) -> str | None:
    """Boot id and start time of a process on Linux ("zombie" for one); None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20:
        return None
    if fields[0] in ("Z", "X"):
        return "zombie"
    return f"{boot}/{fields[19]}"


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    """Open the store (creating it and its schema), closing it after; errors → SessionError."""
    db: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA foreign_keys = ON")
        _prepare(db, path)
        yield db
    except sqlite3.Error as exc:
        raise SessionError(f"session store {path}: {exc}") from exc
    except OSError as exc:
        raise SessionError(f"session store {path}: {exc.strerror or exc}") from exc
    finally:
        if db is not None:
            db.close()


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a read-then-write cannot race another writer.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.rollback()
        raise
    db.commit()


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise SessionError(
            f"session store {path} has schema version {version}, newer than this qwenloop's "
            f"({SCHEMA_VERSION}); upgrade qwenloop"
        )
    db.execute("PRAGMA journal_mode = WAL")  # persistent: recorded in the file
    with _transaction(db):
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return  # another connection created it meanwhile
        (tables,) = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        if version != 0 or tables:
            raise SessionError(f"session store {path}: a SQLite database, but not qwenloop's")
        # One statement at a time: executescript() would commit the transaction first.
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
