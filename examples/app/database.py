"""The example's database: SQLite from the standard library, in SimpleIOT's shape.

SimpleIOT keeps its users and their roles in its own database, not in
Cognito: a ``User`` with a unique ``name`` and a ``user_project``, and a set
of ``Role`` each with a ``name`` and ``is_admin``. This file holds the same
tables (plus the example's projects, devices and data) so that
``require_roles("admin")`` is fed from a real database, as it would be next
to SimpleIOT, where the database is Postgres (see docs/roles.md).

One connection is shared under a lock; every call is short, and callers on
the event loop reach it through a worker thread (sync routes, and the roles
source, which siot_authz runs in its own threads).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from siot_authz import Principal

__all__ = ["DEMO_DEVICE", "DEMO_PROJECT", "DEMO_USERS", "Database"]

#: Seeded at start, so the tokens the example prints are for an admin and a non-admin: name -> (role, is_admin).
DEMO_USERS = {"ada": ("admin", True), "bob": ("member", False)}

#: Seeded by ``python -m examples.app``, so the banner's WebSocket line has a device to watch.
DEMO_PROJECT = "demo"
DEMO_DEVICE = "gh-1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS project (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    "desc" TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS "user" (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,          -- the Cognito username
    user_project INTEGER REFERENCES project(id) ON DELETE SET NULL
);
CREATE TABLE IF NOT EXISTS role (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_admin INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS user_role (
    user_id INTEGER NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES role(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role_id)
);
CREATE TABLE IF NOT EXISTS device (
    serial TEXT PRIMARY KEY,
    project TEXT NOT NULL REFERENCES project(name) ON DELETE CASCADE,
    owner TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS data (
    id INTEGER PRIMARY KEY,
    serial TEXT NOT NULL REFERENCES device(serial) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL                 -- JSON, so 1, 1.5, "on" and true come back as they went in
);
"""

_ROLES_OF = """
SELECT role.name, role.is_admin FROM "user"
JOIN user_role ON user_role.user_id = "user".id
JOIN role ON role.id = user_role.role_id
WHERE "user".name = ?
"""


class Database:
    """Users, roles, projects, devices and data in one SQLite file.

    With no ``path`` the file lives in a new temporary folder, removed by
    :meth:`close`; with one, the data is kept between runs.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self._temporary_folder: Path | None = None
        if path is None:
            self._temporary_folder = Path(tempfile.mkdtemp(prefix="siot-example-"))
            path = self._temporary_folder / "example.sqlite3"
        self.path = Path(path)
        self._connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA foreign_keys = ON")
        self._lock = threading.Lock()
        with self._lock:
            self._connection.executescript(_SCHEMA)  # runs as its own transaction

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._connection.execute("BEGIN")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def close(self) -> None:
        """Close the connection, and remove the file if it was a temporary one."""
        with self._lock:
            self._connection.close()
        if self._temporary_folder is not None:
            shutil.rmtree(self._temporary_folder, ignore_errors=True)

    # -- users and roles ----------------------------------------------------------

    def add_user(self, name: str, *roles: tuple[str, bool]) -> None:
        """Create user ``name`` (if new) and give them ``roles``, each ``(role name, is_admin)``."""
        with self._transaction() as db:
            db.execute('INSERT OR IGNORE INTO "user" (name) VALUES (?)', (name,))
            for role, is_admin in roles:
                db.execute("INSERT OR IGNORE INTO role (name, is_admin) VALUES (?, ?)", (role, is_admin))
                db.execute(
                    'INSERT OR IGNORE INTO user_role SELECT "user".id, role.id FROM "user", role '
                    'WHERE "user".name = ? AND role.name = ?',
                    (name, role),
                )

    def seed_demo_users(self) -> None:
        """Make sure the printed demo tokens' users exist: ada is an admin, bob is not."""
        for name, role in DEMO_USERS.items():
            self.add_user(name, role)

    def seed_demo_device(self) -> None:
        """Make sure device ``gh-1`` (in project ``demo``) exists, as docs/websockets.md's example watches it."""
        self.add_project(DEMO_PROJECT, "seeded by python -m examples.app", "ada")
        self.add_device(DEMO_DEVICE, DEMO_PROJECT, "ada")

    def roles_of(self, principal: Principal) -> list[str]:
        """The roles source for ``CognitoAuth(roles=...)``: the user's role names, plus "admin" if any role is_admin.

        Looked up by Cognito username, which SimpleIOT stores as the user's
        name. A user the database does not know has no roles. This database
        holds one team's users, as SimpleIOT's does; an app serving several
        pools would pick the database by ``principal.user_pool_id``.
        """
        with self._lock:
            rows = self._connection.execute(_ROLES_OF, (principal.username,)).fetchall()
        roles = {name for name, _ in rows}
        if any(is_admin for _, is_admin in rows):
            roles.add("admin")
        return sorted(roles)

    # -- projects, devices and data ------------------------------------------------

    def projects(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._connection.execute('SELECT name, "desc", owner FROM project ORDER BY id').fetchall()
        return [{"name": name, "desc": desc, "owner": owner} for name, desc, owner in rows]

    def add_project(self, name: str, desc: str, owner: str) -> dict[str, Any] | None:
        """The new project, or None if one of that name exists."""
        with self._transaction() as db:
            added = db.execute(
                'INSERT OR IGNORE INTO project (name, "desc", owner) VALUES (?, ?, ?)', (name, desc, owner)
            )
        return {"name": name, "desc": desc, "owner": owner} if added.rowcount else None

    def delete_project(self, name: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM project WHERE name = ?", (name,)).rowcount > 0

    def has_project(self, name: str) -> bool:
        with self._lock:
            return (
                self._connection.execute("SELECT 1 FROM project WHERE name = ?", (name,)).fetchone()
                is not None
            )

    def devices(self, project: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._connection.execute(
                "SELECT serial, project, owner FROM device WHERE ? IS NULL OR project = ? ORDER BY rowid",
                (project, project),
            ).fetchall()
        return [{"serial": serial, "project": proj, "owner": owner} for serial, proj, owner in rows]

    def add_device(self, serial: str, project: str, owner: str) -> dict[str, Any] | None:
        """The new device, or None if one with that serial exists."""
        with self._transaction() as db:
            added = db.execute(
                "INSERT OR IGNORE INTO device (serial, project, owner) VALUES (?, ?, ?)",
                (serial, project, owner),
            )
        return {"serial": serial, "project": project, "owner": owner} if added.rowcount else None

    def delete_device(self, serial: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM device WHERE serial = ?", (serial,)).rowcount > 0

    def has_device(self, serial: str) -> bool:
        with self._lock:
            found = self._connection.execute("SELECT 1 FROM device WHERE serial = ?", (serial,)).fetchone()
        return found is not None

    def data(self, serial: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._connection.execute(
                "SELECT name, value FROM data WHERE serial = ? ORDER BY id", (serial,)
            ).fetchall()
        return [{"name": name, "value": json.loads(value)} for name, value in rows]

    def add_data(self, serial: str, name: str, value: float | int | str | bool) -> dict[str, Any]:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO data (serial, name, value) VALUES (?, ?, ?)", (serial, name, json.dumps(value))
            )
        return {"name": name, "value": value}

    def delete_data(self, serial: str) -> int:
        with self._transaction() as db:
            return db.execute("DELETE FROM data WHERE serial = ?", (serial,)).rowcount
