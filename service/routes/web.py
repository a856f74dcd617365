"""The service's web page at ``/``: plain HTML, CSS and JavaScript shipped in the package
(``service/web``), no build step and nothing fetched from another host."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parents[1] / "web"

router = APIRouter(include_in_schema=False)
assets = StaticFiles(directory=WEB)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(WEB / "index.html", media_type="text/html")
