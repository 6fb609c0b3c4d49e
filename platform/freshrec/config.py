"""One settings object for the whole platform, read from ``FRESHREC_*`` environment variables.

Nested groups use ``__``: ``FRESHREC_TRAIN__BATCH_SIZE=64``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from freshrec.resources import bundled

DEFAULT_API_TOKEN = "freshrec-dev-token"
MIN_TOKEN_CHARS = 16


class FeastSettings(BaseModel):
    project: str = "freshrec"
    repo_path: Path = Field(default_factory=lambda: bundled("feature_repo"), description="Feast feature repository")
    # A separate role for Feast's offline reads: it carries enable_nestloop=off and a
    # statement_timeout, which PostgreSQL's planner needs for Feast's point-in-time join.
    offline_user: str = "freshrec_feast"
    # Its password, where the server checks passwords (unset: the main user's, if it is the same role).
    offline_password: SecretStr | None = None
    registry_schema: str = "feast_registry"
    online_schema: str = "feast_online"
    profile_length: int = Field(20, description="items in a user's profile text")


class ServingSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    max_k: int = 100
    max_batch: int = 1000
    max_text_chars: int = 512
    poll_seconds: float = Field(1.0, description="how often the API checks the current-version pointer")
    # Why one (``freshrec.serving.threads``): a second BLAS or OpenMP thread spins between a request's small calls.
    compute_threads: int = Field(1, ge=1, description="BLAS and torch threads per API process while it serves")
    # Every read (versions, lineage, catalog search too) needs a token; per-user reads always do
    # outside development (see Settings.per_user_reads_need_token).
    require_token_for_reads: bool = False
    # Catalog search without user_id reveals nothing about a customer: open unless set to false.
    open_catalog_search: bool = True


class IngestSettings(BaseModel):
    max_future_seconds: float = Field(300.0, ge=0, description="how far ahead of now an event_time may be (clock skew)")


class ErasureSettings(BaseModel):
    # The key of the tombstones' keyed hashes (HMAC-SHA256 of erased user ids and event keys): every
    # process that loads data or forgets customers needs the same one. Unset in development: a key
    # file under $FRESHREC_HOME, made on first use; outside development it must be set.
    key: SecretStr | None = None
    batch_seconds: float = Field(900.0, ge=0, description="requests within this many seconds share one replay")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRESHREC_", env_nested_delimiter="__", extra="ignore")

    environment: Literal["development", "production"] = "development"
    home: Path = Field(default=Path.home() / ".freshrec", description="embedded database, artifacts, caches")
    database_url: SecretStr | None = Field(default=None, description="external PostgreSQL with pgvector")
    api_token: SecretStr = SecretStr(DEFAULT_API_TOKEN)  # admin: writes, pointer moves, erasures
    # Per-user reads (a customer's recommendations reveal their purchases): the storefront's backend
    # holds this one, not the admin token.
    api_read_token: SecretStr | None = None
    artifacts_uri: str | None = Field(default=None, description="fsspec URI; default $FRESHREC_HOME/artifacts")
    base_model: str | None = Field(default=None, description="local Hugging Face encoder; default MiniLM")
    feast: FeastSettings = FeastSettings()
    serving: ServingSettings = ServingSettings()
    ingest: IngestSettings = IngestSettings()
    erasure: ErasureSettings = ErasureSettings()

    @model_validator(mode="after")
    def _refuse_weak_tokens_in_production(self) -> Settings:
        if self.environment == "development":
            return self
        tokens = {"FRESHREC_API_TOKEN": self.api_token, "FRESHREC_API_READ_TOKEN": self.api_read_token}
        for name, secret in tokens.items():
            token = secret.get_secret_value() if secret is not None else ""
            if not token or token == DEFAULT_API_TOKEN:
                raise ValueError(f"{name} must be set to a secret value outside development")
            if len(token.strip()) < MIN_TOKEN_CHARS:
                # An empty token would let "Authorization: Bearer " through.
                raise ValueError(f"{name} must have at least {MIN_TOKEN_CHARS} characters outside development")
        if self.api_token.get_secret_value() == self.api_read_token.get_secret_value():
            raise ValueError("FRESHREC_API_READ_TOKEN must differ from FRESHREC_API_TOKEN (the admin token)")
        key = self.erasure.key.get_secret_value() if self.erasure.key is not None else ""
        if len(key.strip()) < MIN_TOKEN_CHARS:
            raise ValueError(f"FRESHREC_ERASURE__KEY must be set (at least {MIN_TOKEN_CHARS} characters) outside "
                             "development: the tombstones' keyed hashes need one key shared by every process")
        return self

    @property
    def per_user_reads_need_token(self) -> bool:
        """A customer's recommendations (and a search with their id) need a token outside development,
        and in development once a read token is set."""
        return (self.environment != "development" or self.serving.require_token_for_reads
                or self.api_read_token is not None)

    @property
    def artifacts_root(self) -> str:
        return self.artifacts_uri or str(self.home / "artifacts")


@lru_cache
def get_settings() -> Settings:
    return Settings()
