"""Documents sent as bytes (`content_base64`): PDFs and other files, one at a time and in
batches, read by the same `agent.formats` code as `garrison docs add`, with its size limit."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from agent.formats import MAX_DOCUMENT_BYTES
from tests.api.conftest import assert_error, bearer
from tests.conftest import TenantFixture
from tests.pdfs import minimal_pdf

PRICES = minimal_pdf(["Part XK-4471-B costs 42 euros."], title="Price list")
CORRUPT = minimal_pdf(["lost"])[:120]
PAGE = b"<html><head><title>Returns</title></head><body><h1>Returns</h1><p>30 days.</p>"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_a_pdf_goes_in_with_its_own_title_and_text(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    body = {"content_base64": b64(PRICES), "key": "prices"}  # no format: the signature says PDF
    response = await client.post("/v1/documents", json=body, headers=bearer(acme.secret))
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "Price list"
    chunks = await client.get(f"{response.headers['location']}/chunks", headers=bearer(acme.secret))
    assert [c["content"] for c in chunks.json()["data"]] == ["Part XK-4471-B costs 42 euros."]

    again = await client.post("/v1/documents", json=body, headers=bearer(acme.secret))
    assert again.status_code == 200
    assert again.json()["created"] is False


async def test_bytes_are_read_by_format_signature_or_the_source_extension(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    docs = [
        {"content_base64": b64(PAGE)},  # HTML by its <html> opening
        {"content_base64": b64(b"Guide\n=====\n\n## Ship\n\nMondays."), "source": "kb/guide.md"},
        # A format given wins over detection.
        {"content_base64": b64(b"<p>as is</p>"), "format": "text", "source": "kb/page.html"},
    ]
    titles = []
    for doc in docs:
        response = await client.post("/v1/documents", json=doc, headers=bearer(acme.secret))
        assert response.status_code == 201, response.text
        titles.append(response.json()["title"])
        chunks = await client.get(
            f"{response.headers['location']}/chunks", headers=bearer(acme.secret)
        )
        doc["headings"] = [c["heading"] for c in chunks.json()["data"]]
    assert titles == ["Returns", "Guide", "<p>as is</p>"]
    assert docs[0]["headings"] == ["Returns"]
    assert docs[1]["headings"] == ["Guide > Ship"]  # the setext title is a heading


async def test_an_unreadable_document_is_422_unreadable_document(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    for data, reason in [
        (CORRUPT, "corrupt PDF ("),
        (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "binary file, not text"),
        (b"", "empty file"),
    ]:
        response = await client.post(
            "/v1/documents", json={"content_base64": b64(data)}, headers=bearer(acme.secret)
        )
        error = assert_error(response, 422, "unreadable_document")
        assert error["message"].startswith(reason)
    listed = await client.get("/v1/documents", headers=bearer(acme.secret))
    assert listed.json()["data"] == []


async def test_malformed_requests_for_bytes_are_422_invalid_request(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    cases: list[tuple[dict[str, Any], list[str | int]]] = [
        ({"content_base64": "not base64!"}, ["body", "content_base64"]),
        ({"content_base64": "aGVsbG8"}, ["body", "content_base64"]),  # padding missing
        ({"content_base64": 42}, ["body", "content_base64"]),
        ({"text": "x", "content_base64": b64(b"x")}, ["body"]),
        ({"title": "neither"}, ["body"]),
        ({"text": "x", "format": "pdf"}, ["body"]),
        ({"content_base64": b64(PRICES), "format": "docx"}, ["body", "format"]),
    ]
    for body, loc in cases:
        response = await client.post("/v1/documents", json=body, headers=bearer(acme.secret))
        error = assert_error(response, 422, "invalid_request")
        assert error["details"][0]["loc"] == loc, body
    batch = {"documents": [{"text": "fine"}, {"content_base64": "%%%"}]}
    response = await client.post("/v1/documents/batch", json=batch, headers=bearer(acme.secret))
    error = assert_error(response, 422, "invalid_request")
    assert error["details"][0]["loc"] == ["body", "documents", 1, "content_base64"]


async def test_line_broken_base64_is_accepted(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    wrapped = base64.encodebytes(PRICES).decode()  # MIME style: a line break every 76 characters
    assert "\n" in wrapped.strip()
    response = await client.post(
        "/v1/documents", json={"content_base64": wrapped}, headers=bearer(acme.secret)
    )
    assert response.status_code == 201, response.text


async def test_a_batch_reports_each_bad_file_and_stores_the_rest(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    """The issue's cases through the API: a corrupt PDF, an empty file, a file over the size
    limit and a binary file each get their reason; the good documents go in."""
    docs = [
        {"content_base64": b64(PRICES), "key": "prices"},
        {"content_base64": b64(CORRUPT), "key": "corrupt"},
        {"content_base64": "", "key": "empty"},
        {"content_base64": b64(b"\n\n\t"), "key": "blank"},
        {"content_base64": b64(b"x" * (MAX_DOCUMENT_BYTES + 1)), "key": "huge"},
        {"content_base64": b64(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256))), "key": "elf"},
        {"text": "<p>Returns take 30 days.</p>", "format": "html", "key": "returns"},
    ]
    response = await client.post(
        "/v1/documents/batch",
        json={"documents": docs},
        headers=bearer(acme.secret),
        timeout=120.0,
    )
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert [i["status"] for i in body["data"]] == [
        "created",
        "failed",
        "failed",
        "failed",
        "failed",
        "failed",
        "created",
    ]
    assert (body["created"], body["failed"]) == (2, 5)
    errors = [i["error"] for i in body["data"]]
    assert [e["code"] if e else None for e in errors] == [None] + ["unreadable_document"] * 5 + [
        None
    ]
    messages = [e["message"] if e else None for e in errors]
    assert messages[1].startswith("corrupt PDF (")
    assert messages[2] == "empty file"
    assert messages[3] == "empty file"  # nothing but blank lines
    assert messages[4] == "file is too large (20.0 MiB; the limit is 20 MiB)"
    assert messages[5] == "binary file, not text"
    listed = await client.get("/v1/documents", headers=bearer(acme.secret))
    assert sorted(d["key"] for d in listed.json()["data"]) == ["prices", "returns"]


async def test_a_50_mb_file_is_refused_by_the_request_size_limit(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    huge = b64(b"\x00" * (50 * 10**6))
    raw = json.dumps({"documents": [{"content_base64": huge}, {"text": "small"}]}).encode()
    headers = {**bearer(acme.secret), "Content-Type": "application/json"}
    response = await client.post("/v1/documents/batch", content=raw, headers=headers, timeout=60)
    error = assert_error(response, 413, "payload_too_large")
    assert error["message"].startswith("the request body is larger than ")
    listed = await client.get("/v1/documents", headers=bearer(acme.secret))
    assert listed.json()["data"] == []  # nothing of the request was read, let alone stored


async def test_the_openapi_schema_shows_the_bytes_field(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    create = spec["components"]["schemas"]["DocumentCreate"]
    field = create["properties"]["content_base64"]
    assert {"type": "string", "contentEncoding": "base64"} in field["anyOf"]
    assert "20 MiB" in field["description"]
    assert "required" not in create  # `text` or `content_base64`, exactly one
    formats = spec["components"]["schemas"]["DocumentFormat"]["enum"]
    assert formats == ["text", "markdown", "html", "pdf"]
