"""Where settings come from besides keyword arguments: SimpleIOT ``config.json`` files and ``SIOT_AUTHZ_POOLS``.

The model (:class:`~siot_authz.AuthSettings`) says what valid settings are;
this module reads files and variables into it, and turns pydantic's errors
into messages naming the file, and the file's own keys. ``AuthSettings``'s
``from_simpleiot_*`` and ``pools_from_env`` classmethods delegate here, and
the CLI uses the same functions, so there is one way in for every caller.

It imports nothing from ``_settings`` at run time (the model is handed in as
``cls``), so ``_settings`` can re-export the file readers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

if TYPE_CHECKING:
    from ._settings import AuthSettings

__all__ = [
    "ENV_PREFIX",
    "SIMPLEIOT_HOME",
    "SIMPLEIOT_KEYS",
    "describe_errors",
    "from_simpleiot_config",
    "from_simpleiot_configs",
    "from_simpleiot_home",
    "naming_missing_variables",
    "pools_from_env",
    "read_simpleiot_config",
    "simpleiot_team_configs",
    "split_list",
]

Settings = TypeVar("Settings", bound="AuthSettings")

#: Where SimpleIOT keeps one folder per team, each with a ``config.json``.
SIMPLEIOT_HOME = "~/.simpleiot"

#: The prefix of every environment variable the settings read.
ENV_PREFIX = "SIOT_AUTHZ_"

#: SimpleIOT config.json keys, and the settings fields they fill.
SIMPLEIOT_KEYS = {"region": "region", "cognitoUserPoolId": "user_pool_id", "cognitoClientId": "client_ids"}
_FIELD_TO_SIMPLEIOT_KEY = {field: key for key, field in SIMPLEIOT_KEYS.items()}


def split_list(value: str) -> tuple[str, ...]:
    """``"a, b,,c"`` as ``("a", "b", "c")``: how every comma-separated setting is read."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def simpleiot_team_configs(home: str | Path = SIMPLEIOT_HOME) -> list[Path]:
    """Every team's ``config.json`` under ``home`` (``<home>/<team>/config.json``), in team-name order."""
    root = Path(home).expanduser()
    if not root.is_dir():
        raise ValueError(f"SimpleIOT folder {root} does not exist")
    configs = sorted(root.glob("*/config.json"))
    if not configs:
        raise ValueError(f"SimpleIOT folder {root} has no <team>/config.json")
    return configs


def read_simpleiot_config(path: str | Path) -> dict[str, Any]:
    """The JSON object in a SimpleIOT ``config.json``; ValueError says what is wrong with the file."""
    config_path = Path(path).expanduser()
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read SimpleIOT config {config_path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"SimpleIOT config {config_path} is not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise ValueError(f"SimpleIOT config {config_path} nests too deeply to be a config") from None
    if not isinstance(raw, dict):
        raise ValueError(f"SimpleIOT config {config_path} must be a JSON object")
    return raw


def describe_errors(exc: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """pydantic's errors as ``'field': message; ...``, each field under the name the caller knows it by."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "settings"
        label = (names or {}).get(field, field)
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{label!r}: {message}" if error["loc"] else message)
    return "; ".join(parts)


def naming_missing_variables(title: str, exc: ValidationError) -> ValidationError:
    """``exc`` with each "Field required" saying which ``SIOT_AUTHZ_*`` variable sets it.

    Each error keeps its field (``loc``) and type, so callers that inspect
    the errors see what they saw before; only the missing fields' messages change.
    """
    details: list[InitErrorDetails] = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "missing" and field:
            message = (
                f"Field required: set {ENV_PREFIX}{field.upper()}, pass {field}=..., "
                "or use AuthSettings.from_simpleiot_config(path)"
            )
        else:
            message = str(error["msg"])
        # No context is given, so the message is used as written (its braces are not placeholders).
        details.append(
            {
                "type": PydanticCustomError(error["type"], message),
                "loc": error["loc"],
                "input": error["input"],
            }
        )
    return ValidationError.from_exception_data(title, details)


def from_simpleiot_config(cls: type[Settings], path: str | Path, **overrides: Any) -> Settings:
    """Settings from one SimpleIOT ``config.json``; see :meth:`AuthSettings.from_simpleiot_config`."""
    config_path = Path(path).expanduser()
    raw = read_simpleiot_config(config_path)
    fields: dict[str, Any] = {}
    for config_key, field_name in SIMPLEIOT_KEYS.items():
        if config_key in raw:
            fields[field_name] = raw[config_key]
        elif field_name not in overrides:
            raise ValueError(f"SimpleIOT config {config_path} has no {config_key!r}")
    fields.update(overrides)
    try:
        return cls(**fields)
    except ValidationError as exc:
        # The file's own keys for what came from the file, the field names for the caller's overrides.
        names = {field: key for field, key in _FIELD_TO_SIMPLEIOT_KEY.items() if field not in overrides}
        raise ValueError(f"SimpleIOT config {config_path}: {describe_errors(exc, names)}") from None


def from_simpleiot_configs(
    cls: type[Settings], paths: Iterable[str | Path], **overrides: Any
) -> tuple[Settings, ...]:
    """Settings for several pools, one ``config.json`` each; ``overrides`` apply to all."""
    pools = tuple(from_simpleiot_config(cls, path, **overrides) for path in paths)
    if not pools:
        raise ValueError("no SimpleIOT config.json was given")
    return pools


def from_simpleiot_home(
    cls: type[Settings], home: str | Path = SIMPLEIOT_HOME, **overrides: Any
) -> tuple[Settings, ...]:
    """Settings for every team under ``home``, in team-name order."""
    return from_simpleiot_configs(cls, simpleiot_team_configs(home), **overrides)


def pools_from_env(
    cls: type[Settings], environ: Mapping[str, str] | None = None, **overrides: Any
) -> tuple[Settings, ...]:
    """Settings for one pool or several from the environment; see :meth:`AuthSettings.pools_from_env`.

    ``overrides`` apply to every pool (the CLI's ``--token-use``).
    """
    env = os.environ if environ is None else environ
    pools: list[Settings] = []
    listed = env.get(ENV_PREFIX + "POOLS", "").strip()
    if listed:
        try:
            entries = json.loads(listed)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{ENV_PREFIX}POOLS is not valid JSON: {exc.msg}") from None
        except RecursionError:
            raise ValueError(f"{ENV_PREFIX}POOLS nests too deeply") from None
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise ValueError(f"{ENV_PREFIX}POOLS must be a JSON array of objects")
        for index, entry in enumerate(entries):
            try:
                pools.append(cls(**{**entry, **overrides}))
            except ValidationError as exc:
                raise ValueError(f"{ENV_PREFIX}POOLS[{index}]: {describe_errors(exc)}") from None
    paths = [part for part in env.get(ENV_PREFIX + "SIMPLEIOT_CONFIGS", "").split(os.pathsep) if part]
    if paths:
        pools.extend(from_simpleiot_configs(cls, paths, **overrides))
    if not pools:
        pools.append(cls(**overrides))  # the fields come from the environment
    return tuple(pools)
