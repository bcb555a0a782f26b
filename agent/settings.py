"""Tunables of the run loop, the worker and the API. Built once at the composition root."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.formats import MAX_DOCUMENT_BYTES

DOCUMENT_BODY_BYTES = 4 * -(-MAX_DOCUMENT_BYTES // 3) + 2**20
"""The largest document Garrison reads, base64-encoded, and a MiB for the JSON around it."""


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_", extra="ignore")

    max_decision_attempts: int = Field(default=3, ge=1, le=10)
    """Model calls per step before invalid output fails the run with `invalid_model_output`."""
    decision_max_tokens: int = Field(default=384, ge=16, le=8192)
    """Sized to the action schema, whose strings are bounded: a cut-off answer is invalid JSON."""
    tool_result_chars: int = Field(default=1500, ge=100, le=100_000)
    """How much of a tool result the model sees in later turns (the full result is recorded)."""
    overload_wait_s: float = Field(default=120.0, ge=0)
    """How long a step waits for a model slot when every deployment is at its in-flight cap."""
    worker_concurrency: int = Field(default=4, ge=1, le=1000)
    lease_seconds: float = Field(default=30.0, gt=1)
    poll_interval_s: float = Field(default=0.2, gt=0)
    max_run_attempts: int = Field(default=3, ge=1, le=1000)
    """Claims a run may use up with its worker dying mid-run before it is parked for an operator
    (`garrison runs resume|cancel`) instead of being claimed again."""
    default_max_steps: int = Field(default=8, ge=1, le=200)
    default_retrieval_k: int = Field(default=4, ge=0, le=50)
    loop_max_repeats: int = Field(default=3, ge=0, le=100)
    """A run is stopped (`loop_detected`) when the same tool call, with the same normalised
    arguments and the same result, happens this many times; 0 turns the rule off."""
    loop_stale_window: int = Field(default=4, ge=0, le=100)
    """A run is stopped when this many tool calls in a row brought no new information (no chunk
    or result not seen before in the run); 0 turns the rule off."""
    budget_cache_ttl_s: float = Field(default=5.0, ge=0, le=3600)
    """How long a worker keeps a tenant's budget rules before reading them again."""
    budget_reservation_ttl_s: float = Field(default=600.0, ge=1)
    """A model call's token reservation is reclaimable after this (its worker presumed dead);
    longer than any model call, retries and overload waits included."""
    budget_contention_wait_s: float = Field(default=30.0, ge=0)
    """How long a model call waits for tokens of a daily budget that other calls in flight hold
    (they settle with their real use, usually far below their reservation) before its run ends
    `budget_exhausted`; a budget really spent ends the run at once."""
    budget_prompt_bytes_per_token: float = Field(default=3.0, gt=0, le=16)
    """The prompt estimate a reservation uses: UTF-8 bytes per token, on the low side so the
    estimate stays above the real count."""
    chunk_tokens: int = Field(default=200, ge=32, le=8192)
    """Budget per chunk in estimated tokens; under the embedding model's input limit (256 for
    all-MiniLM-L6-v2) with room for the title and heading embedded with each chunk."""
    chunk_overlap_tokens: int = Field(default=30, ge=0, le=1024)
    ingest_group_chunks: int = Field(default=256, ge=1, le=100_000)
    """Chunks embedded and committed together: one embedding request series, one COPY."""
    bulk_load_min_chunks: int = Field(default=20_000, ge=1)
    """An ingest expected to add at least this many chunks, and more than are stored already,
    drops the vector index and builds it once at the end instead of growing it row by row."""
    search_recall_target: float = Field(default=0.96, gt=0, le=1)
    """The recall@10 each tenant's HNSW scans are calibrated to reach on its own data
    (`agent.services.search_tuning`): a point above the 0.95 promised, for the sampling error
    of measuring it with ~100 questions."""
    search_tune_sample: int = Field(default=100, ge=10, le=10_000)
    """Chunks a calibration uses as queries."""
    search_tune_min_chunks: int = Field(default=1_000, ge=11)
    """Tenants smaller than this keep the default `ef_search`: their searches scan exactly or
    visit most of their rows anyway."""
    search_tune_drift: float = Field(default=0.25, gt=0)
    """A tenant is measured again when its chunk count moved by more than this share."""
    search_tune_interval_s: float = Field(default=300.0, gt=0)
    """How often a worker looks for tenants to measure (again)."""

    @model_validator(mode="after")
    def _overlap_fits(self) -> AgentSettings:
        if self.chunk_overlap_tokens >= self.chunk_tokens // 2:
            raise ValueError("chunk_overlap_tokens must be less than half of chunk_tokens")
        return self

    @model_validator(mode="after")
    def _repeats_mean_repeats(self) -> AgentSettings:
        if self.loop_max_repeats == 1:
            raise ValueError("loop_max_repeats must be 0 (off) or at least 2: one call is no loop")
        return self


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8600, ge=0, le=65535)
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    """Requests larger than this are refused with 413 before they are read into memory."""
    max_document_body_bytes: int = Field(default=DOCUMENT_BODY_BYTES, ge=1024)
    """The same, for the endpoints that ingest documents (the larger of the two applies there):
    by default a document as large as `garrison docs add` reads, sent base64-encoded."""
