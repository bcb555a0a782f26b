"""Configuration of side effects: the SMTP relay, the HTTP allow-list and the dispatcher.

Read once from GARRISON_* variables at the composition root. The defaults send nothing anywhere:
no relay means `send_email` refuses, an empty allow-list means `http_request` refuses every host.
Combinations that would leak (credentials over a cleartext connection to another machine, a
wildcard for the whole internet) refuse to load rather than run.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agent.outbox.egress import parse_allowed_host


class OutboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_", extra="ignore")

    smtp_host: str | None = None
    """The relay every email goes through; unset = `send_email` refuses (`email_not_configured`)."""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str | None = Field(default=None, max_length=254, validate_default=True)
    """The sender address of every email; required with `smtp_host`."""
    smtp_starttls: bool = False
    """Upgrade the relay connection with STARTTLS (required to send credentials off loopback)."""
    smtp_username: str | None = None
    smtp_password: SecretStr | None = Field(default=None, validate_default=True)

    http_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Hosts `http_request` may call: `host` (any port) or `host:port`, comma-separated in the
    environment. Empty = none. Exact names only: there is no wildcard."""

    outbox_max_attempts: int = Field(default=8, ge=1, le=100)
    """Delivery attempts (a dispatcher dying mid-delivery counts) before a row is `failed`."""
    outbox_backoff_base_s: float = Field(default=2.0, gt=0)
    outbox_backoff_cap_s: float = Field(default=300.0, gt=0, validate_default=True)
    outbox_delivery_timeout_s: float = Field(default=15.0, gt=0, le=600)
    """Deadline of one delivery (connect, send, answer)."""
    outbox_lease_seconds: float = Field(default=60.0, gt=0, validate_default=True)
    """A claimed row whose dispatcher has not reported by then is claimable again."""
    outbox_poll_interval_s: float = Field(default=0.5, gt=0, le=60)
    outbox_batch_size: int = Field(default=16, ge=1, le=500)
    """Rows one dispatcher claims and delivers concurrently."""

    @field_validator("http_allow_hosts", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("http_allow_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_allowed_host(entry)  # raises ValueError naming the bad entry
        return value

    # Cross-field checks sit on the later field (with `validate_default`), so an error names
    # the variable to fix: "GARRISON_SMTP_FROM: required when GARRISON_SMTP_HOST is set".
    @field_validator("smtp_from")
    @classmethod
    def _sender(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("smtp_host") is not None and not value:
            raise ValueError("required when GARRISON_SMTP_HOST is set")
        return value

    @field_validator("smtp_password")
    @classmethod
    def _credentials(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (info.data.get("smtp_username") is None) != (value is None):
            raise ValueError("GARRISON_SMTP_USERNAME and GARRISON_SMTP_PASSWORD go together")
        host = info.data.get("smtp_host")
        cleartext = host is not None and not info.data.get("smtp_starttls") and not _loopback(host)
        if value is not None and cleartext:
            # A relay login over cleartext would hand the password to anyone on the path.
            raise ValueError("credentials to a relay off loopback need GARRISON_SMTP_STARTTLS=true")
        return value

    @field_validator("outbox_backoff_cap_s")
    @classmethod
    def _cap(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("outbox_backoff_base_s", 0):
            raise ValueError("must be at least GARRISON_OUTBOX_BACKOFF_BASE_S")
        return value

    @field_validator("outbox_lease_seconds")
    @classmethod
    def _lease(cls, value: float, info: ValidationInfo) -> float:
        # A lease shorter than a delivery could hand a row still being sent to another
        # dispatcher: twice the deadline leaves room for the bookkeeping around it.
        if value < 2 * info.data.get("outbox_delivery_timeout_s", 0):
            raise ValueError("must be at least twice GARRISON_OUTBOX_DELIVERY_TIMEOUT_S")
        return value

    @property
    def email_configured(self) -> bool:
        return self.smtp_host is not None and self.smtp_from is not None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
