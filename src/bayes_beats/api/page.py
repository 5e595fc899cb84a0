"""The service's own routes beside BentoML's endpoints: the web page, its limits, the catalog, the votes
and /metrics. A FastAPI app that serving/service.py mounts at "/" (`@bentoml.asgi_app`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from bayes_beats.api.catalog import Catalog
from bayes_beats.api.imagevibe import MAX_BYTES as MAX_IMAGE_BYTES
from bayes_beats.api.listener_routes import Listeners, listener_routes
from bayes_beats.api.metrics import exposition
from bayes_beats.api.schemas import request_limits


def page_app(static: Path, catalog: Catalog, listeners: Listeners) -> FastAPI:
    page = FastAPI(title="Bayes' Beats page and catalog", openapi_url=None, docs_url=None, redoc_url=None)
    page.mount("/static", StaticFiles(directory=static), name="static")
    listener_routes(page, listeners)  # POST /listener, /feedback; GET and DELETE /listener/{listener}

    @page.get("/")
    def index() -> FileResponse:
        return FileResponse(static / "index.html")

    @page.get("/limits")
    def limits() -> JSONResponse:
        """The request fields' bounds and the image cap: what the page's controls allow (one source)."""
        return JSONResponse({"fields": request_limits(), "max_image_bytes": MAX_IMAGE_BYTES})

    @page.get("/metrics")
    def metrics() -> Response:
        """Every worker's Prometheus metrics (the API's by route: bayes_beats.api.metrics)."""
        body, media_type = exposition()
        return Response(body, media_type=media_type)

    @page.get("/catalog")
    def catalog_listing() -> JSONResponse:
        return JSONResponse({"images": catalog.listing()})

    @page.get("/catalog/random")
    def catalog_random() -> JSONResponse:
        return JSONResponse(catalog.random().summary())

    @page.get("/catalog/{entry_id}/image")
    def catalog_image(entry_id: str) -> Response:
        entry = catalog.get(entry_id)  # a key into a table built at start-up, never a path
        if entry is None:
            return JSONResponse({"error": f"unknown catalog id {entry_id[:64]!r}"}, status_code=404)
        return Response(entry.image, media_type=entry.media_type, headers={"Cache-Control": "max-age=3600"})

    return page
