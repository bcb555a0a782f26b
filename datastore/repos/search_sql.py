"""The SQL of a search, assembled from constant pieces, and the words its keyword half uses.

Every statement is composed with `psycopg.sql` from the constants below: no caller text ever
becomes SQL (query words travel as a parameter of `websearch_to_tsquery`). The vector half is a
materialised CTE of the nearest `n` rows in scope, by HNSW iterative scan or exact scan; the
keyword half ranks `tsvector` matches; the two are fused by reciprocal rank.
"""

from __future__ import annotations

import re

from psycopg import sql

from agent.domain import SearchFilter
from datastore.repos.search_plan import Strategy

MAX_QUERY_WORDS = 32
_WORD = re.compile(r"\w[\w.\-/]*\w|\w")


def keyword_query(text: str) -> str | None:
    """The words the keyword half looks for, OR-ed for `websearch_to_tsquery`.

    When the query holds identifiers — codes, numbers, names — only those are looked for: they
    are what embeddings miss, and common words matched alongside would outrank the one chunk
    that has the code. Otherwise any of the words may match, and more matches rank higher. Only
    word characters reach the parser (with inner dots, dashes and slashes, so "XK-4471-B" stays
    one phrase); its operators cannot be injected, and stop words drop out there.
    """
    # "or" is websearch_to_tsquery's operator, never a word worth matching.
    words = [w for w in _WORD.findall(text) if w.lower() != "or"][:MAX_QUERY_WORDS]
    identifiers = [w for i, w in enumerate(words) if _is_identifier(w, first=i == 0)]
    chosen = identifiers or words
    return " or ".join(chosen) if chosen else None


def _is_identifier(word: str, *, first: bool) -> bool:
    if any(ch.isdigit() for ch in word) or any(ch in "-_./" for ch in word):
        return True
    if len(word) > 1 and word.isupper():  # GDPR, ACME
        return True
    # A capital inside a word (iPhone) or a capitalised word that does not open the query (a
    # name: "what did Okonkwo decide").
    return any(ch.isupper() for ch in word[1:]) or (word[0].isupper() and not first)


def document_predicate(f: SearchFilter) -> sql.Composed:
    """The filter's conditions on documents, AND-ed. The caller's access tags are one more
    condition of their own, beside any `any_tags` the caller chose: both must hold, so a
    restricted key's scope is inside the statement (and inside the count that picks the plan),
    never a filter over results that could leave fewer than k rows."""
    parts = [
        sql.SQL(part)
        for part, wanted in (
            (" AND d.tags @> %(tags)s::text[]", f.tags),
            (" AND d.tags && %(any_tags)s::text[]", f.any_tags),
            (" AND d.metadata @> %(metadata)s", f.metadata),
            # `()` is kept, not dropped as "no condition": an empty scope matches nothing.
            (" AND d.tags && %(access_tags)s::text[]", f.access_tags is not None),
        )
        if wanted
    ]
    return sql.Composed(parts)


COUNT_IN_SCOPE = sql.SQL(
    "SELECT coalesce(sum(d.chunk_count), 0) FROM documents d WHERE d.tenant_id = %(tenant)s{}"
)
_SCOPE = sql.SQL(
    "c.tenant_id = %(tenant)s AND c.document_id IN "
    "(SELECT d.id FROM documents d WHERE d.tenant_id = %(tenant)s{})"
)
# "+ 0" makes the ordering an expression the HNSW index cannot serve, so Postgres computes every
# distance in scope: the exact scan the plan asked for, whatever the planner would prefer.
_ORDER = {
    Strategy.HNSW: sql.SQL("c.embedding <=> %(q)s"),
    Strategy.EXACT: sql.SQL("(c.embedding <=> %(q)s) + 0"),
}
_NEAREST = sql.SQL("""
    nearest AS MATERIALIZED (
        SELECT c.id, c.embedding <=> %(q)s AS distance FROM chunks c
        WHERE {scope} ORDER BY {order} LIMIT %(n)s),
    vector AS (SELECT id, row_number() OVER (ORDER BY distance, id) AS rank FROM nearest)""")
_KEYWORD = sql.SQL("""
    , words AS (SELECT websearch_to_tsquery('english', %(words)s) AS query),
    matches AS MATERIALIZED (
        SELECT c.id, ts_rank(c.tsv, words.query) AS weight FROM chunks c, words
        WHERE {scope} AND c.tsv @@ words.query ORDER BY weight DESC, c.id LIMIT %(n)s),
    keyword AS (SELECT id, row_number() OVER (ORDER BY weight DESC, id) AS rank FROM matches),
    fused AS (
        SELECT coalesce(v.id, kw.id) AS id, v.rank AS vector_rank, kw.rank AS keyword_rank,
               coalesce(1.0 / (%(rrf)s + v.rank), 0) + coalesce(1.0 / (%(rrf)s + kw.rank), 0)
               AS fused
        FROM vector v FULL JOIN keyword kw ON kw.id = v.id
        ORDER BY fused DESC, id LIMIT %(k)s)""")
_HYBRID = sql.SQL("""
    WITH {nearest}{keyword}
    SELECT c.id, c.document_id, c.ordinal, c.heading, c.content, d.title, d.source, d.version,
           1 - (c.embedding <=> %(q)s) AS similarity, f.fused, f.vector_rank, f.keyword_rank,
           CASE WHEN f.keyword_rank IS NOT NULL THEN ts_headline('english', c.content,
               (SELECT query FROM words), %(headline)s) END AS snippet,
           (SELECT count(*) FROM nearest) AS vector_found
    FROM fused f JOIN chunks c ON c.id = f.id JOIN documents d ON d.id = c.document_id
    ORDER BY f.fused DESC, f.vector_rank, c.id""")
# Vector search alone is the hot path (every run retrieves before its first step): one plain
# ordered scan, limited, then joined to its documents, which plans in a fraction of the hybrid
# statement's time. The join comes after the LIMIT: with the join inside the limited scan, the
# prepared (generic) plan of the same shape cost 1.1 ms more at ef_search 64 and 0.07 ms more at
# 20 on the 100k benchmark corpus (bench/search_latency.py). Every chunk has its document, so
# the join drops no row. Relaxed-order index scans return rows roughly by distance; the outer
# query sorts them exactly.
_VECTOR = sql.SQL("""
    SELECT n.id, n.document_id, n.ordinal, n.heading, n.content, doc.title, doc.source,
           doc.version, n.distance, 1 - n.distance AS similarity, NULL::numeric AS fused,
           NULL::bigint AS keyword_rank, NULL::text AS snippet
    FROM (
        SELECT c.id, c.document_id, c.ordinal, c.heading, c.content,
               c.embedding <=> %(q)s AS distance
        FROM chunks c WHERE {scope} ORDER BY {order} LIMIT %(k)s) n
    JOIN documents doc ON doc.id = n.document_id
    ORDER BY n.distance, n.id""")


def statement(strategy: Strategy, f: SearchFilter, keyword: bool) -> sql.Composed:
    """The one statement a search runs; every piece is a constant of this module."""
    scope = sql.SQL("c.tenant_id = %(tenant)s") if f.empty else _SCOPE.format(document_predicate(f))
    order = _ORDER[strategy]
    if not keyword:
        return _VECTOR.format(scope=scope, order=order)
    nearest = _NEAREST.format(scope=scope, order=order)
    return _HYBRID.format(nearest=nearest, keyword=_KEYWORD.format(scope=scope))
