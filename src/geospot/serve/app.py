"""The local web app: drop photos, see the probability map. FastAPI, everything served locally.

Routes:

- ``GET /``: the page (``static/index.html``); ``/static/...``: its script, style
  and the vendored Leaflet;
- ``GET /api/info``: the model (encoder, cells) and the server's limits;
- ``GET /api/basemap.geojson`` and ``GET /api/cells.geojson``: map layers;
- ``POST /api/locate`` (multipart: ``photos`` one or more files, optional
  ``same_place=true``, ``top_k``): exactly the JSON array of ``geospot locate --json``;
- ``POST /api/locate/details``: the same answers plus what the page draws (every
  cell's probability, the 50%/90% circles, the view, optionally the Grad-CAM).

The model is loaded once when the app is made; predictions go through one
lock (the encoder runtime is not shared between threads), so any number of
concurrent requests are answered, each with its own photos.
"""
# No `from __future__ import annotations`: FastAPI reads the route signatures (Request) at run time.
import threading
from pathlib import Path
from typing import Any

from geospot.serve.uploads import Limits, Upload, save_upload, upload_folder

STATIC = Path(__file__).resolve().parent / "static"


class Service:
    """The model and what the routes do with it, without HTTP (tested directly and through the app)."""

    def __init__(self, predictor, limits: Limits | None = None, gradcam: bool = True):
        self.predictor = predictor
        self.limits = limits or Limits()
        self.gradcam_enabled = gradcam
        self._lock = threading.Lock()
        self._cells_geojson: dict | None = None
        self._cam = None

    @property
    def cells(self):
        return self.predictor.model.cells

    def cells_geojson(self) -> dict:
        if self._cells_geojson is None:
            from geospot.serve.mapdata import cells_geojson

            self._cells_geojson = cells_geojson(self.cells)
        return self._cells_geojson

    def info(self) -> dict:
        model = self.predictor.model
        return {"encoder": model.encoder_name, "cells": len(model.cells), "scheme": model.cells.scheme,
                "gradcam": self.gradcam_enabled,
                "limits": {"max_files": self.limits.max_files, "max_file_mb": self.limits.max_file_bytes // 2**20,
                           "max_megapixels": self.limits.max_pixels / 1e6}}

    def locate(self, uploads: list[Upload], same_place: bool, top_k: int, folder: str) -> list:
        """Predictions / errors in upload order (``same_place``: one answer first), with the user's names."""
        from geospot.predict import PredictionError

        paths = [u.path for u in uploads if u.path]
        names = {u.path: u.name for u in uploads if u.path}
        results: list = []
        if paths:
            with self._lock:
                results = self.predictor.predict(paths, top_k=top_k, same_place=same_place)
        for r in results:  # the temporary names never leave the server
            r.path = names.get(r.path, r.path)
            if isinstance(r, PredictionError):
                r.error = r.error.replace(folder + "/", "").replace(folder, "")
            else:
                r.paths = [names.get(p, p) for p in (r.paths or [])]
        if same_place:
            return results + [PredictionError(u.name, u.error) for u in uploads if u.error]
        it = iter(results)  # one result per accepted file, in order
        # Keep the user's order: refused files where they were sent.
        return [PredictionError(u.name, u.error) if u.error else next(it) for u in uploads]

    def details(self, result, source_path: str | None, with_gradcam: bool) -> dict:
        """The page's view of one answer: the JSON answer plus probabilities, circles, bounds, Grad-CAM."""
        from geospot.serve.mapdata import answer_bounds, circle_geometry

        answer = result.to_dict()
        if getattr(result, "probs", None) is None:
            return {"answer": answer}
        probs = result.probs
        out: dict[str, Any] = {
            "answer": answer,
            "probs": [round(float(p), 6) for p in probs],
            "circles": {k: circle_geometry(result.lat, result.lon, float(v)) for k, v in result.radius_km.items()},
            "bounds": answer_bounds(self.cells, probs, answer),
        }
        if with_gradcam and self.gradcam_enabled and source_path:
            from geospot.serve.explain import CamMaker

            if self._cam is None:
                self._cam = CamMaker(self.predictor.model)
            try:
                out["gradcam"] = self._cam.data_uri(source_path, int(probs.argmax()))
            except Exception as exc:  # the answer stands without its picture
                out["gradcam_error"] = f"Grad-CAM failed: {exc}"
        return out


def create_app(model_dir: str | None = None, predictor=None, limits: Limits | None = None, gradcam: bool = True):
    """The FastAPI app for one model (loaded here, once; or pass a ready ``predictor``)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    if predictor is None:
        from geospot.predict import Predictor

        predictor = Predictor.load(model_dir)
    service = Service(predictor, limits, gradcam=gradcam)
    app = FastAPI(title="geospot", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=service.limits.max_request_bytes)

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info():
        return service.info()

    @app.get("/api/basemap.geojson")
    def basemap():
        from fastapi import Response

        from geospot.viz.basemap import basemap_geojson_gz

        # Built once per process from the vendored outlines, sent gzip-compressed as it is.
        return Response(basemap_geojson_gz(), media_type="application/geo+json",
                        headers={"Content-Encoding": "gzip", "Cache-Control": "max-age=3600"})

    @app.get("/api/cells.geojson")
    def cells():
        return JSONResponse(service.cells_geojson(), media_type="application/geo+json")

    def _run(request_form, want_details: bool):
        photos = [f for f in request_form.getlist("photos") if hasattr(f, "file")]
        if not photos:
            return None, JSONResponse({"detail": "no photos: send one or more files in the multipart field 'photos'"},
                                      status_code=400)
        if len(photos) > service.limits.max_files:
            return None, JSONResponse({"detail": f"{len(photos)} photos: the limit is {service.limits.max_files} "
                                                 "per request"}, status_code=400)
        same_place = str(request_form.get("same_place", "false")).strip().lower() in ("1", "true", "on", "yes")
        try:
            top_k = int(request_form.get("top_k", 5))
        except ValueError:
            top_k = -1
        if not 1 <= top_k <= 50:
            return None, JSONResponse({"detail": "top_k must be an integer from 1 to 50"}, status_code=400)
        with_cam = str(request_form.get("gradcam", "false")).strip().lower() in ("1", "true", "on", "yes")
        with upload_folder() as folder:
            uploads = [save_upload(f.file, f.filename, k, folder, service.limits) for k, f in enumerate(photos)]
            results = service.locate(uploads, same_place, top_k, folder)
            if not want_details:
                return [r.to_dict() for r in results], None
            sources = [None] * len(results) if same_place else [u.path for u in uploads]
            return [service.details(r, src, with_cam) for r, src in zip(results, sources)], None

    @app.post("/api/locate")
    async def locate(request: Request):
        form = await request.form()
        try:
            body, error = await _in_thread(_run, form, False)
        finally:
            await form.close()
        return error or JSONResponse(body)

    @app.post("/api/locate/details")
    async def locate_details(request: Request):
        form = await request.form()
        try:
            body, error = await _in_thread(_run, form, True)
        finally:
            await form.close()
        return error or JSONResponse({"results": body})

    return app


async def _in_thread(fn, *args):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` (413) before they are parsed or spooled."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _refuse(self):
        from starlette.responses import JSONResponse

        return JSONResponse({"detail": f"request larger than the server's limit of {self.max_bytes // 2**20} MB"},
                            status_code=413)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse()(scope, receive, send)
        seen, started = 0, False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # a body sent without (or lying about) its length
                    raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse()(scope, receive, send)
