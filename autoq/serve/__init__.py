"""`autoq serve`: the adaptive runtime behind an HTTP API (FastAPI; extra ``serve``)."""

from autoq.serve._app import create_app, validate_api_key
from autoq.serve._server import run_server

__all__ = ["create_app", "run_server", "validate_api_key"]
