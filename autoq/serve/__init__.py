"""`autoq serve`: the adaptive runtime behind an HTTP API (FastAPI; extra ``serve``)."""

from autoq.serve._app import create_app

__all__ = ["create_app"]
