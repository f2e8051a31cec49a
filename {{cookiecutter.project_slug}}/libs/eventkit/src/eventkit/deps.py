"""Dependencies of the routes eventkit and the services define."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from eventkit import pause
from eventkit.kit import ServiceKit


async def get_kit(request: Request) -> ServiceKit:
    """Async, as every dependency on a request's path: FastAPI runs a plain `def` in a
    worker thread, a hop per request."""
    kit: ServiceKit = request.app.state.kit
    return kit


Kit = Annotated[ServiceKit, Depends(get_kit)]
"""Route parameter type that gives a handler its service's kit."""


async def require_admin(kit: Kit, authorization: Annotated[str | None, Header()] = None) -> None:
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


async def require_whole_read_model(kit: Kit) -> None:
    """503 with the reason while a rebuild runs, or after one failed until one succeeds:
    a partial read model would answer wrongly (a 404 for what is not replayed yet)."""
    reason = await pause.unavailable(kit.db)
    if reason is not None:
        raise HTTPException(503, detail=reason)


READ_MODEL = Depends(require_whole_read_model)
"""The dependency of every route that reads the service's read model (a rebuild refills
it): `APIRouter(dependencies=[READ_MODEL])`, or `dependencies=[READ_MODEL]` on a route."""
