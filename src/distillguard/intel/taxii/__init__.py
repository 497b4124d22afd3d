"""TAXII 2.1: our server (`server.create_app`), its admin functions, and our client (`client.pull` / `push`).

Admin (for `distillguard intel serve` and friends): `create_api_root`, `create_collection`,
`create_api_key` (returns the token once; only its SHA-256 is stored), `grant`, `revoke_api_key`, and
`forward_objects` (a server-side copy between collections that never copies TLP:RED).
"""

from __future__ import annotations

from .store import (
    ForwardResult,
    TaxiiStoreError,
    create_api_key,
    create_api_root,
    create_collection,
    forward_objects,
    grant,
    revoke_api_key,
)

__all__ = [
    "ForwardResult",
    "TaxiiStoreError",
    "create_api_key",
    "create_api_root",
    "create_collection",
    "forward_objects",
    "grant",
    "revoke_api_key",
]
