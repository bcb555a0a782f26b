"""API keys: minting (the secret is shown once), authenticating and revoking.

Minting and revoking are audited under the caller's `actor`, in the store's transaction."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence

from agent.domain import ApiKey, Principal, Role
from agent.errors import CallerError, NotFound, Unauthorized
from agent.ports import KeyStore, TenantStore

KEY_PREFIX = "gk_"
PREFIX_CHARS = 10


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyService:
    def __init__(self, tenants: TenantStore, keys: KeyStore) -> None:
        self._tenants = tenants
        self._keys = keys

    async def create(
        self, tenant_name: str, name: str, roles: Sequence[Role], *, actor: str
    ) -> tuple[ApiKey, str]:
        """Mint a key. Returns it with its secret, which is neither stored nor shown again."""
        if not roles:
            raise CallerError("a key needs at least one role")
        tenant = await self._tenants.get_tenant(tenant_name)
        if tenant is None:
            raise NotFound(f"tenant {tenant_name!r} not found")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = await self._keys.create_key(
            tenant.id, name, roles, hash_key(secret), secret[:PREFIX_CHARS], actor=actor
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
