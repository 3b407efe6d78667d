"""First-start set-up of the hub's shared access policies."""

from __future__ import annotations

import base64
import binascii

from hub.domain.devices import generate_key
from hub.domain.policies import DEFAULT_POLICY_RIGHTS, AccessPolicy
from hub.errors import BadRequestError
from hub.ports import PolicyStore

__all__ = ["ensure_policies"]


async def ensure_policies(store: PolicyStore, owner_key: str | None = None) -> dict[str, AccessPolicy]:
    """Create the default policies that are missing (random keys; ``owner_key``, when given,
    becomes iothubowner's primary key on first start) and return all policies by name."""
    if owner_key is not None:
        try:
            if len(base64.b64decode(owner_key, validate=True)) < 16:
                raise BadRequestError("FLEETHUB_OWNER_KEY must decode to at least 16 bytes")
        except binascii.Error:
            raise BadRequestError("FLEETHUB_OWNER_KEY must be base64") from None
    existing = {p.name: p for p in await store.list_policies()}
    missing = [
        AccessPolicy(name, owner_key if name == "iothubowner" and owner_key else generate_key(), generate_key(), rights)
        for name, rights in DEFAULT_POLICY_RIGHTS.items()
        if name not in existing
    ]
    if missing:
        await store.add_policies(missing)
        existing = {p.name: p for p in await store.list_policies()}
    return existing
