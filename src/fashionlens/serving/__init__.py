"""HTTP serving: ``create_app(ServeSettings(...))`` -> a FastAPI app (see :mod:`fashionlens.serving.app`).

Needs the serving extras (fastapi, uvicorn, python-multipart, prometheus-client).
"""

from fashionlens.serving.app import create_app, serve
from fashionlens.serving.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "serve"]
