"""Settings: defaults < <vault>/enrich.toml < ENRICH_* environment < command-line flags."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

CONFIG_FILE = "enrich.toml"
STATE_DIR = ".enrich"


class Settings(BaseModel):
    """Every setting the tool reads; each also exists as ENRICH_<NAME> and, mostly, a flag."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["openai", "local"] | None = None
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    lang: Literal["auto", "zh", "en"] = "auto"
    concurrency: int = Field(8, ge=1, le=256)
    max_input_tokens: int = Field(3000, ge=100)
    max_output_tokens: int = Field(700, ge=64)
    max_reasks: int = Field(2, ge=0, le=5)
    max_attempts: int = Field(6, ge=1, le=20)
    timeout: float = Field(60.0, gt=0)
    http_client: Literal["auto", "asyncio", "direct", "aiohttp", "httpx"] = "auto"  # auto: asyncio unless a proxy applies
    build_ahead: Literal["auto", "on", "off"] = "auto"  # a forked process builds requests: when the loop is busy, always, never
    temperature: float = Field(0.2, ge=0, le=2)
    prompts_dir: Path | None = None
    max_new_tags: int = Field(2, ge=0, le=6)
    candidates: int = Field(15, ge=0, le=50)
    min_content_chars: int = Field(80, ge=0)
    local_model_path: Path | None = None
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    time_limit: float | None = Field(None, gt=0)
    roles: dict[str, str] = Field(default_factory=dict)
    placeholder_patterns: list[str] = Field(default_factory=list)

    def api_key(self) -> str | None:
        """Read the API key from the configured environment variable (at call time only)."""
        return os.environ.get(self.api_key_env) or None


def _read_toml(path: Path) -> dict[str, Any]:
    """Read enrich.toml; accept settings at top level or under [enrich]."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    inner = data.pop("enrich", {})
    return {**data, **inner}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Collect ENRICH_<FIELD> variables (lists and tables are not read from the environment)."""
    out: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        value = environ.get(f"ENRICH_{name.upper()}")
        if value is not None and value != "" and name not in ("roles", "placeholder_patterns"):
            out[name] = value
    return out


def load_settings(
    vault_root: Path | None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the config layers; raise ConfigError naming the bad setting."""
    merged: dict[str, Any] = {}
    if vault_root is not None and (vault_root / CONFIG_FILE).is_file():
        merged.update(_read_toml(vault_root / CONFIG_FILE))
    merged.update(_from_env(os.environ if environ is None else environ))
    merged.update({k: v for k, v in (flags or {}).items() if v is not None})
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        raise ConfigError(
            f"invalid setting {where!r}: {err['msg']}",
            hint=f"check {CONFIG_FILE}, ENRICH_{str(err['loc'][0]).upper() if err['loc'] else ''} or the flag",
        ) from exc


def find_vault_root(start: Path) -> Path:
    """Return the nearest folder (from `start` up) holding .obsidian/ or enrich.toml, else `start`'s folder."""
    start = start.resolve()
    folder = start if start.is_dir() else start.parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".obsidian").is_dir() or (candidate / CONFIG_FILE).is_file():
            return candidate
    return folder
