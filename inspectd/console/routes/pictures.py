"""An inspection's pictures: the photo and its thumbnail, the heat map, the defect outline, one reasoning
token's map, and a challenger's heat map and outline on the same photo (``challenger_results``, shown beside the
champion's by ``routes/models.py``). Rendered off the event loop and cached (``render_cache.py``), capped
(``photos.py``)."""

from __future__ import annotations

import functools

from sqlalchemy import Engine, select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from inspectd.console import photos
from inspectd.console.context import ConsoleContext
from inspectd.console.pages import NUMBER, Pages, id_of, route
from inspectd.console.render_cache import RenderCache
from inspectd.data.archived_photos import PhotoChanged
from inspectd.errors import InspectdError
from inspectd.store import queries
from inspectd.store.schema import ChallengerResultRow

MEDIA = {"photo": "image/jpeg", "thumb": "image/jpeg", "heat": "image/png", "outline": "image/png",
         "token": "image/png"}


def routes(context: ConsoleContext, pages: Pages) -> list[BaseRoute]:
    renders = RenderCache()  # one pool and cache for every picture route of this app
    at = f"/inspections/{NUMBER}"
    return [
        route(f"{at}/photo.jpg", picture, context, pages, renders, "photo"),
        route(f"{at}/thumb.jpg", picture, context, pages, renders, "thumb"),
        route(f"{at}/heat.png", picture, context, pages, renders, "heat"),
        route(f"{at}/outline.png", picture, context, pages, renders, "outline"),
        route(f"{at}/tokens/{{token:int}}.png", picture, context, pages, renders, "token"),
        route(f"{at}/challenger/{{bundle_id:int}}/heat.png", challenger_picture, pages, renders, "heat"),
        route(f"{at}/challenger/{{bundle_id:int}}/outline.png", challenger_picture, pages, renders, "outline"),
    ]


async def picture(context: ConsoleContext, pages: Pages, renders: RenderCache, kind: str,
                  request: Request) -> Response:
    """Rendered off the event loop and cached (``render_cache.py``): a camera photo took seconds on the loop,
    and every other request of every user waited for it. Only the row is read here (a key lookup)."""
    media = MEDIA[kind]
    inspection_id = id_of(request)
    record = pages.record_of(inspection_id)
    token = request.path_params.get("token")
    if media == "image/jpeg" and context.roots.path_of(record) is None:  # retention removed it, say
        raise HTTPException(404, f"the photo of inspection {inspection_id} is not in the archive")
    if media == "image/png" and not record["has_maps"]:
        raise HTTPException(404, f"inspection {inspection_id} has no anomaly map")
    key = (inspection_id, record.get("sha256"), kind, token)
    try:
        body = await renders.get(key, functools.partial(_picture_body, context, pages.gate.reader, record, kind, token))
    except PhotoChanged as exc:
        raise HTTPException(409, str(exc)) from None
    return Response(body, media_type=media, headers={"Cache-Control": "private, max-age=3600"})


def _picture_body(context: ConsoleContext, reader: Engine, record: dict, kind: str, token: int | None) -> bytes:
    """One picture's bytes, in a worker thread: reads the file or the row's blobs and renders at most
    ``photos.LONGEST_SIDE`` px (the photo's layers at the photo's served size, so that they line up with it)."""
    inspection_id = record["id"]
    if kind in ("photo", "thumb"):
        data = context.roots.read(record)  # PhotoChanged when the file is not the one inspected
        if data is not None:
            try:
                return photos.photo_jpeg(data, str(record.get("archived_path") or record.get("source_path")),
                                         context.roots.max_pixels,
                                         photos.THUMB_SIDE if kind == "thumb" else photos.LONGEST_SIDE)
            except InspectdError:
                pass
        raise HTTPException(404, f"the photo of inspection {inspection_id} is not in the archive")
    if kind == "token":
        return _token_picture(reader, inspection_id, record, token)
    maps = queries.artifacts(reader, inspection_id)
    if maps is None:
        raise HTTPException(404, f"inspection {inspection_id} has no anomaly map")
    return photos.heat_png(maps[0]) if kind == "heat" else photos.outline_png(maps[1])


def _token_picture(reader: Engine, inspection_id: int, record: dict, token: int) -> bytes:
    """One reasoning token's map, laid over the photo in the page: a 404 for a token the row does not have."""
    tokens = queries.token_maps(reader, inspection_id)
    if tokens is None or not 0 <= token < tokens.maps.shape[0]:
        raise HTTPException(404, f"inspection {inspection_id} has no reasoning token {token}")
    # the photo's own size: the layer is fitted to it exactly as the photo is (same aspect, same pixels)
    size = (record.get("image_width") or 256, record.get("image_height") or 256)
    return photos.token_png(tokens.maps[token], size)


async def challenger_picture(pages: Pages, renders: RenderCache, kind: str, request: Request) -> Response:
    """A challenger's map or mask as the champion's layer is rendered (same size, same colours), through the same
    pool and cache; 404 naming what is missing: the inspection, the bundle's result on it, or its maps."""
    inspection_id = id_of(request)
    bundle_id = request.path_params["bundle_id"]
    record = pages.record_of(inspection_id)
    if bundle_id > 2**62 or not _challenger_has_maps(pages.gate.reader, inspection_id, bundle_id):
        raise HTTPException(404, f"inspection {inspection_id} has no result of challenger bundle {bundle_id}")
    key = (inspection_id, record.get("sha256"), "challenger", bundle_id, kind)
    body = await renders.get(key, functools.partial(_challenger_body, pages.gate.reader, inspection_id, bundle_id,
                                                    kind))
    return Response(body, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _challenger_has_maps(reader: Engine, inspection_id: int, bundle_id: int) -> bool:
    """Whether the bundle has a result on the inspection (a key lookup, no blob read); a 404 naming the maps when
    the result has none (it failed, say)."""
    ch = ChallengerResultRow
    with reader.connect() as connection:
        row = connection.execute(select(ch.map_png.is_not(None) & ch.mask_png.is_not(None))
                                 .where(ch.inspection_id == inspection_id, ch.bundle_id == bundle_id)).first()
    if row is not None and not row[0]:
        raise HTTPException(404, f"the result of challenger bundle {bundle_id} on inspection {inspection_id} has no "
                                 f"anomaly map")
    return row is not None


def _challenger_body(reader: Engine, inspection_id: int, bundle_id: int, kind: str) -> bytes:
    ch = ChallengerResultRow
    with reader.connect() as connection:
        row = connection.execute(select(ch.map_png, ch.mask_png)
                                 .where(ch.inspection_id == inspection_id, ch.bundle_id == bundle_id)).first()
    if row is None or row[0] is None or row[1] is None:  # deleted since the check
        raise HTTPException(404, f"inspection {inspection_id} has no result of challenger bundle {bundle_id}")
    return photos.heat_png(row[0]) if kind == "heat" else photos.outline_png(row[1])
