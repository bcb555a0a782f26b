"""API keys: minting (the secret is shown once, the access tags fixed), authenticating, revoking.

Minting and revoking are audited under the caller's `actor`, in the store's transaction."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence

from agent.domain import ApiKey, Principal, Role
from agent.errors import CallerError, NotFound, Unauthorized
from agent.ports import KeyStore, TenantStore
from agent.services.access import AccessTagRequired, AccessTags, key_access_tags

KEY_PREFIX = "gk_"
PREFIX_CHARS = 10


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyService:
    def __init__(self, tenants: TenantStore, keys: KeyStore) -> None:
        self._tenants = tenants
        self._keys = keys

    async def create(
        self,
        tenant_name: str,
        name: str,
        roles: Sequence[Role],
        *,
        actor: str,
        access_tags: Sequence[str] | None = None,
        creator_access_tags: AccessTags = None,
    ) -> tuple[ApiKey, str]:
        """Mint a key. Returns it with its secret, which is neither stored nor shown again.
        `access_tags` restricts it to the documents carrying one of them (None: the whole
        tenant; `agent.services.access`); such a key cannot hold the admin role. A creator that
        is itself a restricted key (`creator_access_tags`: one minted before that rule) may mint
        only keys restricted to some of its own tags."""
        if not roles:
            raise CallerError("a key needs at least one role")
        scope = key_access_tags(access_tags)
        if scope is not None and Role.ADMIN in roles:
            # Governance acts on the whole tenant: a restricted admin could rewrite the agents,
            # policies and budgets that runs of every scope use, or revoke the wider keys. Its
            # tags would narrow what it reads, not what it changes.
            raise CallerError(
                "a key with access tags cannot hold the admin role: give it operator, client or "
                "approver roles, or drop the access tags for an administrator's key"
            )
        if creator_access_tags is not None and (
            scope is None or not set(scope) <= set(creator_access_tags)
        ):
            raise AccessTagRequired(
                "a key restricted by access tags can mint only keys restricted to some of them: "
                + ", ".join(creator_access_tags)
            )
        tenant = await self._tenants.get_tenant(tenant_name)
        if tenant is None:
            raise NotFound(f"tenant {tenant_name!r} not found")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = await self._keys.create_key(
            tenant.id,
            name,
            roles,
            hash_key(secret),
            secret[:PREFIX_CHARS],
            actor=actor,
            access_tags=scope,
        )
        return key, secret

    async def authenticate(self, secret: str | None) -> Principal:
        if not secret or not secret.startswith(KEY_PREFIX) or len(secret) > 200:
            raise Unauthorized("a valid API key is required (Authorization: Bearer gk_...)")
        principal = await self._keys.authenticate(hash_key(secret))
        if principal is None:
            raise Unauthorized("the API key is unknown or revoked")
        return principal

    async def list(self, tenant_name: str | None = None) -> list[ApiKey]:
        tenant_id = None
        if tenant_name is not None:
            tenant = await self._tenants.get_tenant(tenant_name)
            if tenant is None:
                raise NotFound(f"tenant {tenant_name!r} not found")
            tenant_id = tenant.id
        return await self._keys.list_keys(tenant_id)

    async def revoke(self, key_id: uuid.UUID, *, actor: str) -> ApiKey:
        key = await self._keys.revoke_key(key_id, actor=actor)
        if key is None:
            raise NotFound(f"API key {key_id} not found")
        return key
