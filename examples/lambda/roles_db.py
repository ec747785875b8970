"""The example's roles database: SQLite in SimpleIOT's shape (``user``, ``role``, ``user_role``).

SimpleIOT keeps roles in its own database, not in Cognito; its Lambdas reach
Postgres. Here one SQLite file stands in, named by ``SIOT_EXAMPLE_ROLES_DB``,
so the authorizer and the handlers (separate processes, as separate Lambdas
are) read the same roles.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import closing

from siot_authz import Principal

__all__ = ["roles_of", "seed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS "user" (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS role (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, is_admin INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS user_role (
    user_id INTEGER NOT NULL REFERENCES "user"(id),
    role_id INTEGER NOT NULL REFERENCES role(id),
    PRIMARY KEY (user_id, role_id)
);
"""

_ROLES_OF = """
SELECT role.name FROM "user"
JOIN user_role ON user_role.user_id = "user".id
JOIN role ON role.id = user_role.role_id
WHERE "user".name = ?
"""


def _path() -> str:
    return os.environ["SIOT_EXAMPLE_ROLES_DB"]


def seed(users: Mapping[str, Iterable[str]], path: str | None = None) -> None:
    """Create the tables and give each Cognito username its roles (``admin`` is the admin role)."""
    with closing(sqlite3.connect(path or _path())) as db, db:
        db.executescript(_SCHEMA)
        for name, roles in users.items():
            db.execute('INSERT OR IGNORE INTO "user" (name) VALUES (?)', (name,))
            for role in roles:
                db.execute(
                    "INSERT OR IGNORE INTO role (name, is_admin) VALUES (?, ?)", (role, role == "admin")
                )
                db.execute(
                    'INSERT OR IGNORE INTO user_role SELECT "user".id, role.id FROM "user", role'
                    ' WHERE "user".name = ? AND role.name = ?',
                    (name, role),
                )


def roles_of(principal: Principal) -> list[str]:
    """The roles source siot_authz calls (through its cache): role names of the principal's user."""
    with closing(sqlite3.connect(_path())) as db:
        return [name for (name,) in db.execute(_ROLES_OF, (principal.username,))]
