"""One module per endpoint: its routes and its serving logic (validate, policy, dispatch, encode).

Each module's `register(app, dispatcher, limits)` adds its routes to one application's FastAPI app; the
handlers are closures over that application's dispatcher and limits, so two ingress apps never share state.
"""
