"""The SQLite schema of one botstate table: name checks, versioned creation, and its SQL text.

Each storage owns one entry table. Two tables shared by every botstate table in the file sit next
to it: ``botstate_tables`` records each table's schema version (so a later release knows what it
is migrating from) and its lock token sequence, and ``botstate_locks`` holds held locks, which are
therefore never entries. Every statement is built once per storage as a constant string, so
SQLite's statement cache prepares each of them only once per connection.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["SCHEMA_VERSION", "Sql", "check_schema", "create_schema_sql", "validate_table"]

SCHEMA_VERSION = 1
"""Version of the layout below; recorded per table in ``botstate_tables``."""

REGISTRY = "botstate_tables"
LOCKS = "botstate_locks"

# Letters, digits and underscores only: the name is interpolated (quoted) into SQL, so anything
# else is refused rather than escaped. ``$`` never appears in a valid name, which keeps the
# ``<table>$expires`` index names from colliding with any table's name.
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def validate_table(table: object) -> str:
    """Return ``table`` if it is a safe, unreserved SQL identifier; raise ConfigError otherwise."""
    if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
        raise ConfigError(
            f"invalid SQLite table name {table!r}: use 1-63 letters, digits and underscores, "
            "not starting with a digit"
        )
    lowered = table.lower()
    if lowered.startswith("sqlite_") or lowered in (REGISTRY, LOCKS):
        raise ConfigError(f"SQLite table name {table!r} is reserved")
    return table


def create_schema_sql(table: str) -> list[str]:
    """DDL creating ``table`` and the shared tables, idempotently (run inside one transaction)."""
    return [
        f"CREATE TABLE IF NOT EXISTS {REGISTRY} ("
        " name TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL,"
        " lock_seq INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID",
        f"CREATE TABLE IF NOT EXISTS {LOCKS} ("
        " tbl TEXT NOT NULL, key TEXT NOT NULL, owner TEXT NOT NULL, token INTEGER NOT NULL,"
        " expires_at INTEGER NOT NULL, PRIMARY KEY (tbl, key)) WITHOUT ROWID",
        # Keys are the clustered primary key: a point read is one b-tree descent. Expiry is
        # wall-clock milliseconds (it must survive restarts); NULL means "never expires".
        f'CREATE TABLE IF NOT EXISTS "{table}" ('
        " key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, expires_at INTEGER) WITHOUT ROWID",
        # Partial index: sweeping touches only entries that can expire.
        f'CREATE INDEX IF NOT EXISTS "{table}$expires" ON "{table}" (expires_at)'
        " WHERE expires_at IS NOT NULL",
        f"INSERT INTO {REGISTRY} (name, version) VALUES ('{table}', {SCHEMA_VERSION})"
        " ON CONFLICT (name) DO NOTHING",
    ]


def check_schema(cursor: sqlite3.Cursor, table: str) -> bool:
    """True when ``table`` exists at the current version; ConfigError when it is from the future.

    SQLite identifiers ignore ASCII case, so ``Chats`` and ``chats`` would be one table while the
    registry and lock rows told them apart: a name registered under another spelling is refused.
    """
    try:
        rows = cursor.execute(
            f"SELECT name, version FROM {REGISTRY} WHERE name = ? COLLATE NOCASE", (table,)
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False
        raise
    for name, _ in rows:
        if name != table:
            raise ConfigError(
                f"SQLite table name {table!r} differs only in case from the table {name!r} already "
                "in this file, and SQLite names ignore case: use the same spelling, or another name"
            )
    row = rows[0][1:] if rows else None
    if row is None:
        return False
    if row[0] > SCHEMA_VERSION:
        raise ConfigError(
            f"SQLite table {table!r} has schema version {row[0]}, newer than this botstate "
            f"understands ({SCHEMA_VERSION}); upgrade botstate"
        )
    return True


@dataclass(frozen=True, slots=True)
class Sql:
    """Every statement a storage runs, with its table name already in place."""

    get: str
    set: str
    delete: str
    touch: str
    update_value: str
    scan_from: str
    scan_after: str
    scan_from_below: str
    scan_after_below: str
    clear_chunk: str
    sweep_chunk: str
    lock_get: str
    lock_next_token: str
    lock_put: str
    lock_extend: str
    lock_release: str
    lock_sweep: str

    @classmethod
    def for_table(cls, table: str) -> Sql:
        t = f'"{table}"'
        scan = f"SELECT key, value, expires_at FROM {t} WHERE key {{op}} ?{{upper}} ORDER BY key LIMIT ?"
        below = " AND key < ?"
        return cls(
            get=f"SELECT value, expires_at FROM {t} WHERE key = ?",
            set=f"INSERT OR REPLACE INTO {t} (key, value, expires_at) VALUES (?, ?, ?)",
            delete=f"DELETE FROM {t} WHERE key = ? RETURNING expires_at",
            touch=f"UPDATE {t} SET expires_at = ? WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
            update_value=f"UPDATE {t} SET value = ? WHERE key = ?",
            scan_from=scan.format(op=">=", upper=""),
            scan_after=scan.format(op=">", upper=""),
            scan_from_below=scan.format(op=">=", upper=below),
            scan_after_below=scan.format(op=">", upper=below),
            clear_chunk=f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} LIMIT ?) RETURNING expires_at",
            sweep_chunk=f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at <= ? LIMIT ?)",
            lock_get=f"SELECT expires_at FROM {LOCKS} WHERE tbl = '{table}' AND key = ?",
            lock_next_token=f"UPDATE {REGISTRY} SET lock_seq = lock_seq + 1 WHERE name = '{table}'"
            " RETURNING lock_seq",
            lock_put=f"INSERT OR REPLACE INTO {LOCKS} (tbl, key, owner, token, expires_at)"
            f" VALUES ('{table}', ?, ?, ?, ?)",
            lock_extend=f"UPDATE {LOCKS} SET expires_at = ?"
            f" WHERE tbl = '{table}' AND key = ? AND token = ? AND expires_at > ?",
            lock_release=f"DELETE FROM {LOCKS} WHERE tbl = '{table}' AND key = ? AND token = ?",
            lock_sweep=f"DELETE FROM {LOCKS} WHERE tbl = '{table}' AND expires_at <= ?",
        )
