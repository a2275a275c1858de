"""Test helper: hold the write lock of a bridge database from the test (a database that takes
no writes, or is slow to commit), on SQLite or PostgreSQL.

Runs on the test's own thread.
"""

from __future__ import annotations

from typing import Any


class WriteLock:
    """While held, another session holds the database's write lock. On SQLite that is the
    whole database (BEGIN IMMEDIATE); on PostgreSQL it is `tables`, locked EXCLUSIVE."""

    def __init__(self, url: str, tables: str = "outbox_message, scrollback"):
        self.url = url
        self.tables = tables
        self.conn: Any = None

    def __enter__(self) -> WriteLock:
        if self.url.startswith("sqlite:///"):
            import sqlite3

            self.conn = sqlite3.connect(self.url[len("sqlite:///"):], isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            import psycopg2

            self.conn = psycopg2.connect(self.url)
            self.conn.cursor().execute(f"LOCK TABLE {self.tables} IN EXCLUSIVE MODE")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.url.startswith("sqlite"):
            self.conn.execute("ROLLBACK")
        else:
            self.conn.rollback()
        self.conn.close()
