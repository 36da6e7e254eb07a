"""`geospot serve`: a local web app to locate photos and see their probability maps.

Optional extra: ``pip install "geospot[serve]"`` (FastAPI, uvicorn,
python-multipart). Nothing is fetched from the network: the page, its script,
Leaflet (vendored from its npm package, BSD-2) and the map layers are served
by the app itself. See ``docs/serve.md``.
"""
from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args, **kwargs):
    """See :func:`geospot.serve.app.create_app`."""
    from geospot.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)
