"""Access tags: which of a tenant's documents and runs an API key, and the runs it submits, may
see.

A key without access tags sees its whole tenant, as every key did before them. A restricted key
sees a document only when the document carries at least one of the key's tags; any other
document does not exist for it (`not_found`, like another tenant's), and it may store only
documents that carry one of its tags. It sees a run only when the run was submitted under a
scope within its tags (`sees_run`): a run's steps record the passages it retrieved, so a run of
a wider scope would show the key documents it may not see. This module states those rules; the
services pass the caller's tags down on every read, write and search (so the API and the CLI
share them), and the datastore applies them inside the SQL, beside the tenant predicate: a
search never comes back short of k rows because of them.

What does not belong here: who holds which tags (`agent.services.keys`), and a policy's data
scope (`agent.policy`), which this narrows further and never widens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from agent.domain import Run, SearchFilter
from agent.errors import CallerError, Forbidden
from agent.services.document_input import normalize_tags

AccessTags = tuple[str, ...] | None
"""A caller's scope: the tags of which a document must carry one; None = the whole tenant."""


class AccessTagRequired(Forbidden):
    """A restricted key tried to store a document that would not carry one of its tags, or to
    replace one that does not: either way a document it could not see afterwards."""

    code = "access_tag_required"


def key_access_tags(tags: Sequence[str] | None) -> AccessTags:
    """A new key's access tags, normalised as a document's tags are (so they compare equal);
    None keeps the key to its whole tenant."""
    if tags is None:
        return None
    clean = normalize_tags(tuple(tags))
    if not clean:
        # An empty scope would be a key that sees nothing: a revoked key by another name.
        raise CallerError("a restricted key needs at least one access tag (none: whole tenant)")
    return clean


def visible(document_tags: Iterable[str], access_tags: AccessTags) -> bool:
    """Whether a document with these tags exists for a caller with these access tags."""
    return access_tags is None or not set(access_tags).isdisjoint(document_tags)


def sees_run(run_tags: AccessTags, access_tags: AccessTags) -> bool:
    """Whether a run submitted under `run_tags` exists for a caller with `access_tags`.

    Every run, for a caller of the whole tenant. For a restricted key, a run whose scope is
    within the key's tags: each document such a run retrieved carries one of the run's tags,
    hence one of the key's. A run of the whole tenant (None) may have retrieved anything, so it
    is hidden; one whose scope is empty retrieved nothing, so it is not. The datastore's SQL
    says the same (`datastore.repos.run_access`)."""
    if access_tags is None:
        return True
    return run_tags is not None and set(run_tags) <= set(access_tags)


def require_access_tag(what: str, document_tags: Iterable[str], access_tags: AccessTags) -> None:
    """Refuse to write a document (`what` names it) the writer could not see afterwards."""
    if not visible(document_tags, access_tags):
        assert access_tags is not None  # visible() holds for the whole tenant
        raise AccessTagRequired(
            f"{what} must carry at least one of this API key's access tags: "
            + ", ".join(access_tags)
        )


def narrowed(scope: AccessTags, other: AccessTags) -> AccessTags:
    """A scope within both: either one when the other is the whole tenant, else the tags they
    share. Sharing none leaves `()`, under which nothing is found, never the whole tenant."""
    if scope is None:
        return other
    if other is None:
        return scope
    return tuple(sorted(set(scope) & set(other)))


def within(search: SearchFilter, access_tags: AccessTags) -> SearchFilter:
    """`search` narrowed to the caller's access tags: a constraint AND-ed with the caller's own
    conditions, which can only ever remove documents from what they select."""
    if access_tags is None:
        return search
    return replace(search, access_tags=narrowed(search.access_tags, access_tags))


def run_scope(run: Run, policy_tags: tuple[str, ...]) -> SearchFilter:
    """What a run's searches may see: documents carrying one of the policy's data-scope tags
    (empty: no policy scope) and, separately, one of the tags the run was submitted with. Two
    conditions, both required, so each only narrows what the other lets through."""
    return SearchFilter(any_tags=policy_tags, access_tags=run.access_tags)
