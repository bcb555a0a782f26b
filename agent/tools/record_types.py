"""The registry of state record types: what `write_record` accepts, and for how long it is valid.

A record's `data` must validate against its type's model (unknown fields refused), and a type
may give records a default validity after which readers are told the data is out of date. Add a
type by adding a model and an entry in `RECORD_TYPES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.domain import JSON

STALE_VERSION: Final = "stale_version"
"""The record changed (or appeared, or vanished) since this run last read it: read it again."""
RECORD_INVALID: Final = "record_invalid"
RECORD_TYPE_MISMATCH: Final = "record_type_mismatch"
MAX_DATA_BYTES: Final = 16_384


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomerPreferences(_Data):
    """How a customer wants to be contacted; changed by the customer or by support."""

    contact_channel: Literal["email", "phone", "post", "none"]
    language: str = Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$", description="e.g. en, de-CH")
    newsletter: bool = False
    notes: str = Field(default="", max_length=500)


class CaseStatus(_Data):
    """Where a support case stands."""

    status: Literal["open", "waiting_on_customer", "resolved"]
    assignee: str | None = Field(default=None, max_length=100)
    summary: str = Field(default="", max_length=1000)


@dataclass(frozen=True, slots=True)
class RecordType:
    model: type[_Data]
    valid_for: timedelta | None
    """Default validity of a write; None: valid until changed."""


RECORD_TYPES: Final = {
    "customer_preferences": RecordType(CustomerPreferences, timedelta(days=30)),
    "case_status": RecordType(CaseStatus, timedelta(hours=24)),
}
RecordTypeName = Literal["customer_preferences", "case_status"]


class InvalidRecord(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def validated(type_name: str, data: JSON) -> JSON:
    """`data` normalised by its type's model (defaults filled in), or `InvalidRecord`."""
    spec = RECORD_TYPES.get(type_name)
    if spec is None:
        raise InvalidRecord(f"unknown record type {type_name!r}")
    try:
        model = spec.model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidRecord(f"data is not a valid {type_name}: {problems}") from exc
    return model.model_dump(mode="json")
