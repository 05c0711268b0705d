"""PostgresStorage's schema and statements, built once per table name.

Layout of ``<table>``: ``id bytea`` is the primary key, ``key bytea`` the full key, ``value bytea`` the
codec's bytes and ``expires_at timestamptz`` the expiry (NULL: never). Keys are stored as UTF-8 bytes
because PostgreSQL ``text`` cannot hold NUL characters. A btree entry is limited to about 2.7 KB, so
``id`` is the key's own UTF-8 when it has at most :data:`INLINE_KEY_BYTES` bytes, else ``0xFF`` and
the key's SHA-256 digest: valid UTF-8 never contains a ``0xFF`` byte, so the two forms cannot collide,
and every short key keeps its byte order in the index (glob prefixes become index range scans). The
``key`` column is NULL for inline keys, which is most of them: nothing is stored twice.

Time is the server's (``now()``): every client of a table agrees on what has expired, whatever its
own clock says. Locks live in ``<table>_locks``, fencing tokens come from ``<table>_lock_token``.
"""

from __future__ import annotations

import hashlib
import re

from ..errors import ConfigError
from ._base import refuse_derived_table

__all__ = [
    "INLINE_KEY_BYTES",
    "LAYOUT_QUERY",
    "LONG_KEY_MARK",
    "SCHEMA_VERSION",
    "Statements",
    "key_id",
    "key_text",
]

SCHEMA_VERSION = 1
"""Bumped by every release that changes the layout; ``botstate_meta`` records it per table."""

INLINE_KEY_BYTES = 1024
LONG_KEY_MARK = b"\xff"

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,39}")
# Accepts names that need quoting (upper case, hyphens) but never a quote, a dot or a space: the
# derived names (``<table>_locks``...) stay within PostgreSQL's 63-byte identifier limit.

LOCK_ROW_RETENTION = "1 minute"
"""How long a free lock row is kept before a sweep deletes it (far longer than any statement)."""
LOCK_SWEEP_EVERY = 60.0
"""Seconds between the sweeps of free lock rows that releases run (see ``PostgresStorage``)."""

_LIVE = "(expires_at IS NULL OR expires_at > now())"
_EXPIRES = "now() + {} * interval '1 millisecond'"

META_TABLE = "botstate_meta"
_DERIVED = {
    "_locks": "lock table",
    "_lock_token": "lock token sequence",
    "_expires": "expiry index (named so by earlier releases)",
    "_pkey": "primary key index",
}
"""Suffixes of the relations named after a table: a table so named would be another table's part."""
SCHEMA_LOCK = 0x626F7473  # "bots": the advisory lock serialising schema changes in a database


def key_id(raw: bytes) -> bytes:
    """The primary-key bytes of a key given as UTF-8: itself, or a marked digest when long."""
    if len(raw) <= INLINE_KEY_BYTES:
        return raw
    return LONG_KEY_MARK + hashlib.sha256(raw).digest()


def key_text(row_id: bytes, key: bytes | None) -> str:
    """The key of a row, from its ``id`` and (for long keys) ``key`` columns."""
    return (row_id if key is None else key).decode("utf-8", "surrogatepass")


def quote_table(table: str) -> str:
    """Validate a table name and quote it; anything that could break out of quotes is refused."""
    if not isinstance(table, str) or _TABLE_NAME.fullmatch(table) is None:
        raise ConfigError(
            f"invalid table name {table!r}: use letters, digits, '_' or '-' (at most 40, not starting"
            " with a digit)"
        )
    return f'"{table}"'


def check_table_name(table: str) -> str:
    """Refuse a name that is a derived name of another table, so no two storages share a relation.

    With ``x`` and ``x_locks`` both in use, the second storage's entries would be the first one's
    locks: its ``clear()`` would delete held locks.
    """
    quote_table(table)
    if table == META_TABLE:
        raise ConfigError(f"invalid table name {table!r}: PostgresStorage keeps its schema versions there")
    refuse_derived_table(table, _DERIVED)
    return table


LAYOUT_QUERY = (
    "SELECT c.relkind::text,"
    " (SELECT array_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attname)"
    "  FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),"
    " (SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i JOIN pg_attribute a"
    "  ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = c.oid AND i.indisprimary),"
    " EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
    "  AND a.attnum = i.indkey[0] WHERE i.indrelid = c.oid AND a.attname = 'expires_at')"
    " FROM unnest($1::text[]) WITH ORDINALITY AS u(name, n)"
    " LEFT JOIN pg_class c ON c.oid = to_regclass(u.name)"
    " ORDER BY u.n"
)
"""Per quoted relation name: its kind, sorted ``column type`` list, primary-key columns and whether an
index starts with ``expires_at``; all NULL when there is no such relation."""

_TZ = "timestamp with time zone"


class Statements:
    """Every SQL statement for one table, as constants asyncpg prepares and caches per connection."""

    def __init__(self, table: str) -> None:
        t = quote_table(check_table_name(table))
        locks = quote_table(f"{table}_locks")
        seq = quote_table(f"{table}_lock_token")
        self.table = table
        self.relations = [t, locks, seq]
        """Quoted names of what the storage owns, in the order of :attr:`layout`."""
        self.layout: list[tuple[str, list[str] | None]] = [
            ("r", [f"expires_at {_TZ}", "id bytea", "key bytea", "value bytea"]),
            ("r", [f"expires_at {_TZ}", "id bytea", "token bigint"]),
            ("S", None),
        ]
        """Expected kind and sorted ``column type`` list of each relation (its primary key is ``id``)."""
        self.schema = [
            f"CREATE TABLE IF NOT EXISTS {t} (id bytea PRIMARY KEY, key bytea,"
            " value bytea NOT NULL, expires_at timestamptz)",
            f"CREATE TABLE IF NOT EXISTS {locks} (id bytea PRIMARY KEY, token bigint NOT NULL,"
            " expires_at timestamptz NOT NULL)",
            f"CREATE SEQUENCE IF NOT EXISTS {seq} OWNED BY {locks}.token",  # dropped with the locks
            f"COMMENT ON TABLE {t} IS 'botstate storage, schema version {SCHEMA_VERSION}'",
        ]
        # Unnamed: PostgreSQL picks a free name, so no other relation can make it skip the index.
        # It is created only when the table has no index on expires_at (checked in the catalogue).
        self.expiry_index = f"CREATE INDEX ON {t} (expires_at) WHERE expires_at IS NOT NULL"
        upsert = " ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at"
        live_id = f"WHERE id = $1 AND {_LIVE}"

        self.get = f"SELECT value FROM {t} {live_id}"
        self.get_many = f"SELECT id, value FROM {t} WHERE id = ANY($1::bytea[]) AND {_LIVE}"
        self.has = f"SELECT true FROM {t} {live_id}"
        self.set = (
            f"INSERT INTO {t} (id, key, value, expires_at)"
            f" VALUES ($1, $2, $3, {_EXPIRES.format('$4::int8')}){upsert}"
        )
        # Rows with distinct ids only: one INSERT cannot update the same row twice.
        self.set_many = (
            f"INSERT INTO {t} (id, key, value, expires_at)"
            f" SELECT i, k, v, {_EXPIRES.format('ms')}"
            " FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::int8[]) AS u(i, k, v, ms)"
            f"{upsert}"
        )
        self.delete = f"DELETE FROM {t} WHERE id = $1 RETURNING {_LIVE}"
        self.touch = f"UPDATE {t} SET expires_at = {_EXPIRES.format('$2::int8')} {live_id} RETURNING true"
        # Keyset pagination over the primary key: no cursor, so no connection is held between pages
        # and an abandoned iterator costs nothing. $1 is the inclusive lower bound, $2 the exclusive
        # upper one (NULL: none), $4 a byte LIKE pattern the whole key must match (filtered by the
        # server, so a pattern without a literal prefix does not send every row to the client).
        page = (
            f"FROM {t} WHERE id >= $1 AND ($2::bytea IS NULL OR id < $2) AND {_LIVE}"
            " AND coalesce(key, id) LIKE $4::bytea ORDER BY id LIMIT $3"
        )
        self.scan_keys = f"SELECT id, key {page}"
        self.scan_entries = f"SELECT id, key, value {page}"
        self.clear = (
            f"WITH gone AS (DELETE FROM {t} RETURNING expires_at)"
            f" SELECT count(*) FILTER (WHERE {_LIVE}) FROM gone"
        )
        self.sweep = (
            f"WITH gone AS (DELETE FROM {t} WHERE expires_at <= now() RETURNING 1) SELECT count(*) FROM gone"
        )
        # Released and expired lock rows stay a while: see lock_acquire.
        self.sweep_locks = f"DELETE FROM {locks} WHERE expires_at <= now() - interval '{LOCK_ROW_RETENTION}'"

        # Compare-and-set: one statement each, atomic under READ COMMITTED (the row is re-checked
        # after waiting for a concurrent writer).
        self.cas_replace = (
            f"UPDATE {t} SET value = $2, expires_at = {_EXPIRES.format('$4::int8')}"
            f" WHERE id = $1 AND value = $3 AND {_LIVE} RETURNING true"
        )
        self.cas_create = (
            f"INSERT INTO {t} AS t (id, key, value, expires_at)"
            f" VALUES ($1, $2, $3, {_EXPIRES.format('$4::int8')}){upsert}"
            " WHERE t.expires_at IS NOT NULL AND t.expires_at <= now() RETURNING true"
        )
        # Increment: counters are decimal ASCII. An expired row restarts from the amount with a new
        # expiry; a live one keeps its expiry (a fixed window). A live non-integer matches neither
        # branch of the WHERE, so nothing is written and no row returned: the caller reports it.
        expired = "t.expires_at IS NOT NULL AND t.expires_at <= now()"
        self.increment = (
            f"INSERT INTO {t} AS t (id, key, value, expires_at)"
            f" VALUES ($1, $2, convert_to($3::numeric::text, 'UTF8'), {_EXPIRES.format('$4::int8')})"
            " ON CONFLICT (id) DO UPDATE SET"
            f" value = CASE WHEN {expired} THEN EXCLUDED.value"
            " ELSE convert_to((encode(t.value, 'escape')::numeric + $3::numeric)::int8::text, 'UTF8') END,"
            f" expires_at = CASE WHEN {expired} THEN EXCLUDED.expires_at ELSE t.expires_at END"
            f" WHERE {expired} OR encode(t.value, 'escape') ~ '^-?[0-9]+$'"
            " RETURNING value"
        )

        # Locks: one upsert takes the row when it is free or its lease ran out; the token comes
        # from a sequence, so it grows with every acquisition and also identifies the holder.
        # Tokens must grow in the order the lock is granted, so the token of a row taken over is
        # drawn in the UPDATE, once the row is locked: a VALUES token is drawn when the statement
        # starts, and one that waited for the row would be older than a grant made meanwhile. So a
        # release frees the row instead of deleting it, and the sweep leaves rows alone for a
        # while: a new row (VALUES token) is only ever inserted where no grant was made for long.
        self.lock_acquire = (
            f"INSERT INTO {locks} AS l (id, token, expires_at)"
            f" VALUES ($1, nextval('{seq}'), {_EXPIRES.format('$2::int8')})"
            f" ON CONFLICT (id) DO UPDATE SET token = nextval('{seq}'), expires_at = EXCLUDED.expires_at"
            " WHERE l.expires_at <= now() RETURNING token"
        )
        self.lock_extend = (
            f"UPDATE {locks} SET expires_at = {_EXPIRES.format('$3::int8')}"
            " WHERE id = $1 AND token = $2 AND expires_at > now() RETURNING true"
        )
        self.lock_release = (
            f"UPDATE {locks} SET expires_at = least(expires_at, now()) WHERE id = $1 AND token = $2"
        )
