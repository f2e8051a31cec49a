"""Input types every service's API uses, so any input gets a 4xx naming it, never a 5xx.

Text rejects control characters (NUL breaks PostgreSQL; CR/LF and line separators break
mail and log headers); numbers are bounded; lists are pages (`limit`, `after`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Path, Query
from pydantic import Field
from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

NO_CONTROL_CHARACTERS = "^[^\x00-\x1f\x7f\u2028\u2029]*$"
# Positions and ids are INTEGER columns: a larger number is a 422, not a database error.
MAX_POSITION = 2**31 - 1


def text(*, min_length: int = 0, max_length: int, **extra: Any) -> Any:
    """A text field with no control characters (a pydantic Field)."""
    return Field(
        min_length=min_length, max_length=max_length, pattern=NO_CONTROL_CHARACTERS, **extra
    )


# An id in a path: `/things/{thing_id}`.
IdInPath = Annotated[str, Path(min_length=1, max_length=100, pattern=NO_CONTROL_CHARACTERS)]
# An id in a query: `?thing_id=`.
IdInQuery = Annotated[
    str | None, Query(min_length=1, max_length=100, pattern=NO_CONTROL_CHARACTERS)
]
MAX_LIMIT = 1000
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many items.")]
DEFAULT_LIMIT = 100
PositionAfter = Annotated[
    int, Query(ge=0, le=MAX_POSITION, description="Continue after this position.")
]
IdAfter = Annotated[
    str | None,
    Query(max_length=100, pattern=NO_CONTROL_CHARACTERS, description="Continue after this id."),
]


async def page_after(
    session: AsyncSession,
    query: Select[Any],
    order: tuple[InstrumentedAttribute[Any], ...],
    after: str | None,
    limit: int,
) -> list[Any]:
    """One page of `query` in `order` (whose last column is the id), after the item `after`."""
    if after is not None:
        anchor = (await session.execute(select(*order).where(order[-1] == after))).first()
        if anchor is None:
            raise HTTPException(404, detail=f"after: no item {after}")
        query = query.where(tuple_(*order) > tuple_(*anchor))
    return list((await session.scalars(query.order_by(*order).limit(limit))).all())
