"""The FastAPI app of one ingress: built by a function, per application, from that application's settings.

Limits and API keys are held by this app instance (its middleware and its endpoint closures), so two
ingress applications in one process never share them.
"""

from __future__ import annotations

from fastapi import FastAPI

from serve_app.config import Limits
from serve_app.ingress.dispatch import Dispatcher
from serve_app.ingress.endpoints import chunk, cohere_embed, embeddings, models, rerank, tei, tokenize
from serve_app.ingress.errors import install_handlers
from serve_app.ingress.middleware import IngressMiddleware

ENDPOINTS = (embeddings, rerank, chunk, tokenize, cohere_embed, tei, models)


def create_app(
    dispatcher: Dispatcher,
    limits: Limits,
    api_keys: list[bytes],
    allow_unauthenticated: bool = False,
    key_priorities: dict[bytes, str] | None = None,
) -> FastAPI:
    """`key_priorities`: API key -> the priority lane its requests get when they name none."""
    app = FastAPI(
        title="embedserve",
        version="0.1.0",
        description="Embeddings and reranking for many models behind one OpenAI/Jina/Cohere-compatible endpoint.",
    )
    fast_routes = {}
    for endpoint in ENDPOINTS:
        fast_routes.update(endpoint.register(app, dispatcher, limits) or {})
    install_handlers(app)
    # Metrics label requests by these paths (others are "other"): the app's routes, plus every fast route's
    # concrete path, such as /tei/<model>/embed for each served model (a bounded set: models x routes).
    routes = [getattr(r, "path", "") for r in app.routes] + list(fast_routes)
    app.add_middleware(
        IngressMiddleware,
        keys=api_keys,
        allow_unauthenticated=allow_unauthenticated,
        max_body_bytes=limits.max_body_bytes,
        routes=routes,
        fast_routes=fast_routes,
        key_priorities=key_priorities,
    )
    return app
