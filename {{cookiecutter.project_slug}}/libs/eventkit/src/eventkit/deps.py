"""Dependencies of the routes eventkit and the services define."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from eventkit.kit import ServiceKit


def get_kit(request: Request) -> ServiceKit:
    kit: ServiceKit = request.app.state.kit
    return kit


Kit = Annotated[ServiceKit, Depends(get_kit)]
"""Route parameter type that gives a handler its service's kit."""


def require_admin(kit: Kit, authorization: Annotated[str | None, Header()] = None) -> None:
    """Admin calls need `Authorization: Bearer <ADMIN_TOKEN>` when ADMIN_TOKEN is set."""
    token = kit.settings.ADMIN_TOKEN
    if not token:
        return
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, detail="admin call: send Authorization: Bearer <ADMIN_TOKEN>")
    given = authorization.removeprefix("Bearer ").strip()
    # Compared as bytes: compare_digest refuses non-ASCII text, and any input must get a 403.
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(403, detail="admin call: wrong admin token")
