"""The tables behind :class:`~botstate.storages.sqlalchemy.SQLAlchemyStorage` and its SQL, per dialect.

Long keys defeat btree indexes (1024 four-byte characters are 4 KB; InnoDB allows 3072 bytes per
index entry, PostgreSQL about 2.7 KB), so rows are found by the SHA-256 digest of the UTF-8 key.
The key itself is kept in a binary column: binary comparison is case-sensitive and NUL-safe on
every database, and it lets glob scans narrow by a literal prefix as a byte range.

Statements are built once per storage and reused, so SQLAlchemy's compiled cache serves every call.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import BindParameter

from ..errors import ConfigError
from ._base import refuse_derived_table

__all__ = ["SCAN_PAGE", "SCHEMA_VERSION", "Schema", "Statements", "digest", "encode_key", "validate_table"]

SCHEMA_VERSION = 1
"""Bumped whenever the tables change; kept in ``<table>_version``: an old botstate refuses a newer layout."""

SCAN_PAGE = 500
"""Rows per page of a glob scan: each page is one short query, nothing stays open between pages."""

_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_MYSQL = frozenset({"mysql", "mariadb"})
_PREFIX_INDEX = ("mysql", "mariadb", "sqlite")
"""Dialects that get the key prefix index (PostgreSQL cannot index 4 KB keys)."""
_DERIVED = {
    "_locks": "lock table",
    "_version": "schema version table",
    "_exp": "expiry index",
    "_k": "key index",
}
"""Suffixes of the names made from a table's: a table so named would be another storage's part."""

# What already holds our names, per dialect: (name, kind, table an index belongs to). PostgreSQL
# and SQLite keep tables and indexes in one namespace (SQLite ignoring case); MySQL's indexes
# belong to their table, so only tables and views can be in the way there.
_RELATIONS = {
    "postgresql": "SELECT c.relname, CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table'"
    " WHEN 'i' THEN 'index' WHEN 'I' THEN 'index' WHEN 'v' THEN 'view' WHEN 'm' THEN 'view'"
    " WHEN 'S' THEN 'sequence' ELSE 'relation' END, t.relname FROM pg_class c"
    " LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_class t ON t.oid = i.indrelid"
    " WHERE c.relnamespace = current_schema()::regnamespace AND c.relname IN :names",
    "sqlite": "SELECT lower(name), type, lower(tbl_name) FROM sqlite_master WHERE lower(name) IN :names",
    "mysql": "SELECT TABLE_NAME, CASE TABLE_TYPE WHEN 'VIEW' THEN 'view' ELSE 'table' END, NULL"
    " FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :names",
}
_RELATIONS["mariadb"] = _RELATIONS["mysql"]

# MySQL needs fixed-size binary for a primary key and LONGBLOB for values over 64 KB.
_DIGEST = LargeBinary().with_variant(mysql.BINARY(32), "mysql", "mariadb")
_KEY = LargeBinary().with_variant(mysql.BLOB(), "mysql", "mariadb")
_VALUE = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def validate_table(name: object) -> str:
    """Accept lowercase SQL identifiers only: the name reaches DDL, and case folds differently per DB.

    A name another table's parts are named by is refused too: with ``x`` and ``x_locks`` both in
    use, the second storage's entries would be the first one's lock rows.
    """
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise ConfigError(
            f"table must be 1-48 characters of a-z, 0-9 and _, not starting with a digit; got {name!r}"
        )
    refuse_derived_table(name, _DERIVED)
    return name


def encode_key(key: str) -> bytes:
    """UTF-8 bytes of a key; lone surrogates are kept, so every ``str`` key round-trips."""
    return key.encode("utf-8", "surrogatepass")


def digest(key_bytes: bytes) -> bytes:
    return hashlib.sha256(key_bytes).digest()


class Schema:
    """The three tables: entries, locks and a one-row layout version.

    All are named after the entries table, so storages with different tables never share one.
    """

    def __init__(self, name: str) -> None:
        self.name = validate_table(name)
        self.metadata = MetaData()
        mysql_opts: dict[str, Any] = {"mysql_engine": "InnoDB"}
        self.entries = Table(
            name,
            self.metadata,
            Column("kh", _DIGEST, primary_key=True),
            Column("k", _KEY, nullable=False),
            Column("v", _VALUE, nullable=False),
            Column("exp", BigInteger, nullable=True),  # wall-clock ms; NULL never expires
            Index(f"{name}_exp", "exp"),
            # Narrows glob scans by prefix. PostgreSQL cannot index 4 KB keys, so it scans there.
            Index(f"{name}_k", "k", mysql_length=255).ddl_if(
                dialect=_PREFIX_INDEX  # type: ignore[arg-type]  # tuples are documented
            ),
            **mysql_opts,
        )
        self.locks = Table(
            f"{name}_locks",
            self.metadata,
            Column("kh", _DIGEST, primary_key=True),
            Column("owner", String(32), nullable=False),
            Column("exp", BigInteger, nullable=False),  # lease end, wall-clock ms
            Column("token", BigInteger, nullable=False),
            Index(f"{name}_locks_exp", "exp"),
            **mysql_opts,
        )
        self.meta = Table(
            f"{name}_version",
            self.metadata,
            Column("name", String(32), primary_key=True),
            Column("version", Integer, nullable=False),
            **mysql_opts,
        )

    def indexes(self, dialect: str) -> dict[str, str]:
        """The names of the indexes created on ``dialect``, each with its table's."""
        return {
            index.name: table.name
            for table in (self.entries, self.locks)
            for index in table.indexes
            if index.name is not None and (index.name != f"{self.name}_k" or dialect in _PREFIX_INDEX)
        }

    def conflict(self, conn: Connection) -> str | None:
        """Why one of our names is held by something else (another program's table or index), if so.

        Checked before any DDL: ``CREATE ... IF NOT EXISTS`` and SQLAlchemy's ``checkfirst`` keep
        whatever holds a name, and an index name taken on PostgreSQL or SQLite fails the creation
        (on SQLite half-way, leaving the table without its indexes).
        """
        dialect = conn.dialect.name
        tables = {table.name: table for table in (self.entries, self.locks, self.meta)}
        indexes = self.indexes(dialect) if dialect in ("postgresql", "sqlite") else {}
        query = _RELATIONS.get(dialect)
        found: dict[str, tuple[str, str | None]]
        if query is None:  # another dialect: its tables are all we can look up portably
            found = {name: ("table", None) for name in inspect(conn).get_table_names() if name in tables}
        else:
            stmt = text(query).bindparams(bindparam("names", expanding=True))
            rows = conn.execute(stmt, {"names": [*tables, *indexes]}).all()
            found = {name: (kind, owner) for name, kind, owner in rows}
        for name, (kind, owner) in found.items():
            if (name in indexes and (kind, owner) != ("index", indexes[name])) or (
                name in tables and kind != "table"
            ):
                holder = f"an index of table {owner!r}" if kind == "index" else f"a {kind}"
                return f"{name!r}, the name of its {_part(name)}, is taken by {holder}"
        inspector = inspect(conn)
        for name, (kind, _) in found.items():
            if name in tables and kind == "table":
                columns = {column["name"] for column in inspector.get_columns(name)}
                if not set(tables[name].c.keys()) <= columns:
                    return f"table {name!r} exists with columns this storage does not use"
        return None

    def create(self, conn: Connection) -> None:
        """Create what is missing: tables, and indexes an interrupted creation left out."""
        self.metadata.create_all(conn)
        for table in (self.entries, self.locks):
            for index in table.indexes:
                index.create(conn, checkfirst=True)


def _part(name: str) -> str:
    for suffix, part in _DERIVED.items():
        if name.endswith(suffix):
            return part
    return "entries table"


def _upsert(table: Table, dialect: str) -> Executable | None:
    """``INSERT`` that overwrites an existing row's value and expiry, or None for the generic path."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table)
        return pg.on_conflict_do_update(
            index_elements=[table.c.kh], set_={"v": pg.excluded.v, "exp": pg.excluded.exp}
        )
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(table)
        return lite.on_conflict_do_update(
            index_elements=[table.c.kh], set_={"v": lite.excluded.v, "exp": lite.excluded.exp}
        )
    if dialect in _MYSQL:
        my = mysql.insert(table)
        return my.on_duplicate_key_update(v=my.inserted.v, exp=my.inserted.exp)
    return None


class Statements:
    """Every statement the storage runs, built once for one schema and dialect."""

    def __init__(self, schema: Schema, dialect: Dialect) -> None:
        t, lk = schema.entries, schema.locks
        kh: BindParameter[Any] = bindparam("p_kh")
        now: BindParameter[Any] = bindparam("p_now")
        self.dialect = dialect.name
        # MySQL's SELECT ... FOR UPDATE on a missing row takes a gap lock in REPEATABLE READ; two
        # such transactions inserting into the gap deadlock. There, the insert runs on its own.
        self.insert_outside_lock = dialect.name in _MYSQL
        # SQLite has no row locks: a read-modify-write takes the write lock up front instead.
        self.begin_immediate = dialect.name == "sqlite"
        self.live: ColumnElement[bool] = or_(t.c.exp.is_(None), t.c.exp > now)
        live = self.live
        self.entries = t

        self.get = select(t.c.v).where(t.c.kh == kh, live)
        self.has = select(t.c.kh).where(t.c.kh == kh, live)
        self.get_many = select(t.c.kh, t.c.v).where(t.c.kh.in_(bindparam("p_khs", expanding=True)), live)
        self.upsert = _upsert(t, dialect.name)
        self.insert = insert(t)
        self.update = update(t).where(t.c.kh == kh).values(v=bindparam("p_v"), exp=bindparam("p_exp"))
        self.update_value = update(t).where(t.c.kh == kh).values(v=bindparam("p_v"))
        self.lock_entry = select(t.c.v, t.c.exp).where(t.c.kh == kh).with_for_update()
        self.delete = delete(t).where(t.c.kh == kh, live)
        self.touch = update(t).where(t.c.kh == kh, live).values(exp=bindparam("p_exp"))
        self.clear_live = delete(t).where(live)
        self.clear_rest = delete(t)
        self.sweep = delete(t).where(t.c.exp <= now)

        self.lock_lock = select(lk.c.token, lk.c.exp).where(lk.c.kh == kh).with_for_update()
        self.insert_lock = insert(lk)
        self.update_lock = (
            update(lk)
            .where(lk.c.kh == kh)
            .values(owner=bindparam("p_owner"), exp=bindparam("p_exp"), token=bindparam("p_token"))
        )
        self.extend_lock = (
            update(lk)
            .where(lk.c.kh == kh, lk.c.owner == bindparam("p_owner"), lk.c.exp > now)
            .values(exp=bindparam("p_exp"))
        )
        self.release_lock = (
            update(lk).where(lk.c.kh == kh, lk.c.owner == bindparam("p_owner")).values(exp=now)
        )
        self.sweep_locks = delete(lk).where(lk.c.exp <= now)
        self._scans: dict[tuple[bool, bool, bool, bool], Executable] = {}

    def scan(self, *, values: bool, low: bool, high: bool, after: bool) -> Executable:
        """One page of a glob scan, in digest order: keyset pagination needs no open cursor."""
        shape = (values, low, high, after)
        stmt = self._scans.get(shape)
        if stmt is None:
            t = self.entries
            columns = (t.c.kh, t.c.k, t.c.v) if values else (t.c.kh, t.c.k)
            query = select(*columns).where(self.live)
            if low:
                query = query.where(t.c.k >= bindparam("p_low"))
            if high:
                query = query.where(t.c.k < bindparam("p_high"))
            if after:
                query = query.where(t.c.kh > bindparam("p_after"))
            stmt = query.order_by(t.c.kh).limit(SCAN_PAGE)
            self._scans[shape] = stmt
        return stmt
