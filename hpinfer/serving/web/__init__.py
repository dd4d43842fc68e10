"""The web page (``hpinfer serve --ui``): static HTML/JS/CSS, no build step, nothing fetched from elsewhere.

It talks to the jobs API (so multi-page documents show live progress) with the API key the user types;
the page's own files are open (a browser can't send a bearer token when it loads a page), everything it
fetches from the API needs the key. Off by default: a server is an API first, and a page is more surface.
"""

import re
from pathlib import Path
from typing import Any, Dict

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse

STATIC = Path(__file__).parent / "static"
FILES = {"/": ("index.html", "text/html"), "/web/app.js": ("app.js", "text/javascript"),
         "/web/style.css": ("style.css", "text/css")}
# Scripts and styles only from the page's own files: even a bug that put OCR text into HTML couldn't run it.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def install_web(app: FastAPI, service: Any) -> None:
    service.open_paths = (*service.open_paths, *FILES)
    for path, (name, media_type) in FILES.items():
        def serve(name: str = name, media_type: str = media_type) -> FileResponse:
            headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
            return FileResponse(STATIC / name, media_type=media_type, headers=headers)

        app.add_api_route(path, serve, methods=["GET"], include_in_schema=False)

    @app.get("/web/info", include_in_schema=False)
    async def info(request: Request) -> JSONResponse:
        """What the page needs to know: the pipeline, its endpoint and the engine and precision of each model."""
        pipeline, adapter = service.pipeline, service.adapter
        result = {
            "pipeline": pipeline.settings.pipeline_name, "endpoint": adapter.path, "acceptsPdf": adapter.accepts_pdf,
            "fileField": adapter.file_field, "models": [_model(p) for p in getattr(pipeline, "predictors", [])],
        }
        return JSONResponse({"logId": request.state.log_id, "errorCode": 0, "errorMsg": "Success", "result": result})


def _model(predictor: Any) -> Dict[str, Any]:
    """The engine and precision from the session's summary line, e.g. 'onnxruntime 1.23 CPU threads=2 precision=fp32'."""
    settings = getattr(getattr(predictor, "session", None), "settings", "") or ""
    precision = re.search(r"precision=(\S+)", settings)
    return {"name": predictor.name, "engine": settings.split(" ", 1)[0] or "?",
            "precision": precision.group(1) if precision else "?", "settings": settings}
