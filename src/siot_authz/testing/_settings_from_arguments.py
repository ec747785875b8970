"""Settings for the test kit that come from its arguments alone, never from ``SIOT_AUTHZ_*`` variables.

A developer who ran the server with ``SIOT_AUTHZ_TOKEN_USE=access`` or
``SIOT_AUTHZ_LEEWAY_SECONDS=120`` exported still has them in the shell that
runs pytest. Read from there, they would quietly change what the kit's
tokens must be: the local issuer's ID tokens refused as
``token_use_mismatch``, an expired one let in. The kit's settings are what
its code says, on every machine.
"""

from __future__ import annotations

from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .._settings import AuthSettings

__all__ = ["settings_from_arguments"]


class _ArgumentsOnly(AuthSettings):
    # Named like its base in validation errors: a user reads "AuthSettings", as everywhere else.
    model_config = SettingsConfigDict(title="AuthSettings")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def settings_from_arguments(**fields: Any) -> AuthSettings:
    """``AuthSettings(**fields)``, validated the same way, with every other field at its default."""
    validated = _ArgumentsOnly(**fields)
    # A plain AuthSettings, equal to one built directly; validated above, so not validated again.
    return AuthSettings.model_construct(_fields_set=validated.model_fields_set, **dict(validated))
