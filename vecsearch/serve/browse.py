"""GET /api/v1/pictures: the collection a page at a time, for a page with no query yet."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from .. import MAX_K
from ..query import MAX_ITEM_ID
from .schemas import ERRORS, MAX_SEED, BrowseOrder, PicturesResponse
from .service import Service, thumbnail_url


def browse_router(service: Service) -> APIRouter:
    """The browse route over one service (mounted under API_PREFIX)."""
    router = APIRouter()

    @router.get("/pictures", response_model=PicturesResponse, responses=ERRORS, tags=["index"])
    def pictures(
        limit: Annotated[int, Query(ge=1, le=MAX_K, description="Pictures per page.")] = 24,
        offset: Annotated[int, Query(ge=0, le=MAX_ITEM_ID, description="Position of the first one.")] = 0,
        order: Annotated[
            BrowseOrder, Query(description="random (a shuffle fixed by seed), newest (modified time) or path.")
        ] = "random",
        seed: Annotated[
            int, Query(ge=0, le=MAX_SEED, description="The shuffle: one seed pages through every picture once.")
        ] = 0,
    ) -> dict[str, Any]:
        """Pictures of the index with their captions, tags and thumbnails, and how many there are."""
        with service.current() as idx:
            page = idx.browse(limit, offset, order=order, seed=seed)
            tags = idx.tags_of(item.id for item in page.items)
            generation = idx.generation
        entries = []
        for item in page.items:
            data = item.to_dict()
            data["thumbnail"] = thumbnail_url(item.id, item.relpath)
            data["tags"] = [tag.to_dict() for tag in tags.get(item.id, ())]
            entries.append(data)
        end = offset + len(page.items)
        return {
            "pictures": entries,
            "total": page.total,
            "offset": offset,
            "limit": limit,
            "order": order,
            "seed": seed,
            "next_offset": end if end < page.total else None,
            "generation": generation,
        }

    return router
