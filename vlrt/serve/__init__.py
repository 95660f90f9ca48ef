"""`vlrt serve`: an HTTP service for embedding and search (the `serve` extra: FastAPI, uvicorn,
prometheus-client). `app.py` holds the endpoints, `batching.py` the queues that batch requests
together, `media.py` the decode worker processes, `config.py` the settings, `metrics.py` the
Prometheus metrics; `static/index.html` is the search page."""
