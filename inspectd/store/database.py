"""Engine setup and migrations for the history store (SQLite or PostgreSQL)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

import re

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from inspectd.errors import InspectdError
from inspectd.file_modes import make_dirs, open_private, restrict

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class StoreError(InspectdError):
    """The history database cannot be opened, migrated or written."""


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets engineers read while the daemon writes; busy_timeout makes a
    # writer wait for a reader's lock instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    # Takes effect only in a new, empty file (before the first table): retention can then give deleted pages
    # back to the file system. Older files keep their mode (the retention log says how to convert them).
    cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _read_only_sqlite(url, path: Path) -> Engine:
    """A reader's engine: opens the file read-only, so an engineer in the service's group (read access to the
    file, its -wal and -shm, and their folder) reads it without sudo and can never change it. When the daemon is
    stopped there is no -wal file and a reader cannot create the -shm file in the service's folder: the file is
    then read as it stands (``immutable``)."""
    uri = f"file:{quote(str(path))}?mode=ro"

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchall()
            return connection
        except sqlite3.OperationalError:
            connection.close()
            if Path(f"{path}-wal").exists():
                raise
            return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=10, check_same_thread=False)

    return create_engine(url, creator=connect)


def _private_sqlite_file(path: Path) -> None:
    """The store's folder (when created here) 0750 and its file 0640 before SQLite opens it, whatever the umask:
    the inspection record is for the service's user and group, not every local user. SQLite gives the -wal and
    -shm files the database file's mode, so they follow; left over from an older install they are narrowed too.
    An empty file is a new database to SQLite."""
    make_dirs(path.parent)
    os.close(open_private(path))
    for extra in (f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        restrict(Path(extra))


def open_engine(url: str, create: bool = True) -> Engine:
    """``create=False`` (readers) refuses a SQLite file that does not exist yet and opens it read-only."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with its own text
        raise StoreError(f"store.url {url!r} is not a database URL ({exc})") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            if not create:
                if not Path(parsed.database).is_file():
                    raise StoreError(f"store file {parsed.database} does not exist (has the daemon run yet?)")
                return _read_only_sqlite(parsed, Path(parsed.database))
            try:
                _private_sqlite_file(Path(parsed.database))
            except OSError as exc:
                raise StoreError(f"cannot create the store file {parsed.database}: {exc.strerror or exc}") from exc
        engine = create_engine(parsed, connect_args={"timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


def _alembic_config():
    from alembic.config import Config  # alembic (and mako) only where the schema is changed: readers start fast

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


_REVISION = re.compile(r'^(down_)?revision = (?:"([^"]+)"|None)$', re.MULTILINE)


def head_revision() -> str:
    """The newest migration, read from the ``revision``/``down_revision`` lines of the scripts without importing
    alembic (its import costs reader commands ~0.1 s): the one revision no other script revises. A test holds it
    equal to alembic's own ``ScriptDirectory.get_current_head()``."""
    revisions, revised = set(), set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        for down, value in _REVISION.findall(script.read_text(encoding="utf-8")):
            if value:
                (revised if down else revisions).add(value)
    heads = revisions - revised
    if len(heads) != 1:
        raise StoreError(f"migrations in {MIGRATIONS}: expected one head revision, found {sorted(heads)}")
    return heads.pop()


def current_revision(engine: Engine) -> str | None:
    """The store's schema revision (alembic's ``alembic_version`` table), None before the first migration."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def require_head(engine: Engine) -> Engine:
    """``engine`` when its store is at the newest schema; a StoreError otherwise (the commands do not migrate:
    the daemon does, at start)."""
    revision = current_revision(engine)
    if revision != head_revision():
        raise StoreError(f"store {engine.url.render_as_string(hide_password=True)} is at schema {revision or 'none'}, "
                         f"expected {head_revision()} (start the daemon once to migrate it)")
    return engine


MIGRATION_LOCK_KEY = 0x696E7370  # "insp": the PostgreSQL advisory lock that serialises migrations


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest revision (a no-op when it is there)."""
    from alembic import command

    config = _alembic_config()
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # boxes sharing one store may start together: one migrates, the others wait and find it done
                # (two at once both created alembic_version and one exited on a unique violation)
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot migrate the store at {engine.url.render_as_string(hide_password=True)}: {exc}") from exc
    return head_revision()
