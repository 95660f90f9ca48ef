"""Serve embeddings and search over HTTP: dynamic batching, limits, metrics and a search page.

  vlrt serve BUNDLE                      embed texts, videos and images
  vlrt serve --index DIR                 ... and search the index (its own bundle and engine)
  vlrt serve --index DIR --writable      ... and add videos to it (POST /v1/index/videos)

Endpoints: POST /v1/embed/text, /v1/embed/video, /v1/embed/image, /v1/search, /v1/index/videos;
GET /healthz, /readyz, /metrics (Prometheus), / (the search page), /openapi.json (the schema).
Clients may name files only with --media-root DIR, and only under it; otherwise they upload.
Every flag also reads VLRT_<NAME> from the environment (e.g. VLRT_API_KEY, VLRT_PORT); a flag
given wins. Binds to 127.0.0.1 unless --host says otherwise. One JSON log line per request
goes to stderr. SIGTERM or Ctrl-C finishes the requests in flight, then stops.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from vlrt.cli.common import subcommand
from vlrt.errors import VlrtError


def register(sub) -> None:
    p = subcommand(sub, "serve", __doc__)
    p.add_argument("bundle", nargs="?", help="bundle directory (default with --index: the index's bundle)")
    p.add_argument("--index", metavar="DIR", help="an index made by `vlrt embed`, searched by /v1/search")
    p.add_argument("--writable", action="store_const", const=True, help="accept POST /v1/index/videos")
    p.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="default 8080")
    p.add_argument("--media-root", metavar="DIR", help="let clients name files under DIR (and nowhere else)")
    p.add_argument("--api-key", help="require this key (Authorization: Bearer KEY or X-API-Key) on every "
                   "endpoint but /healthz, /readyz and the page; better given as VLRT_API_KEY")
    p.add_argument("--engine", metavar="KEY", help='an engine key or "auto" (default: the index\'s engine, '
                   "else the bundle's default)")
    p.add_argument("--threads", type=int, help="encoder threads per session (default: the backend's)")
    g = p.add_argument_group("batching and limits")
    g.add_argument("--text-batch", type=int, help="text requests per encoder batch (default 32)")
    g.add_argument("--text-wait-ms", type=float, help="longest a text request waits for its batch to fill (default 5)")
    g.add_argument("--text-queue", type=int, help="text requests waiting before 429 (default 256)")
    g.add_argument("--video-batch", type=int, help="videos per encoder batch (default 16)")
    g.add_argument("--video-wait-ms", type=float, help="longest a decoded video waits for its batch (default 50)")
    g.add_argument("--video-queue", type=int, help="decoded videos waiting before 429 (default 64)")
    g.add_argument("--decode-workers", type=int, help="decode worker processes (default 2)")
    g.add_argument("--worker-memory-mb", type=int, help="memory a decode worker may add (default 1024)")
    g.add_argument("--request-timeout-s", type=float, help="per request (default 120)")
    g.add_argument("--max-upload-mb", type=float, help="default 256")
    g.add_argument("--max-duration-s", type=float, help="longest video accepted (default 3600)")
    g.add_argument("--max-width", type=int, help="default 7680")
    g.add_argument("--max-height", type=int, help="default 4320")
    g.add_argument("--max-frames", type=int, help="default 1000000")
    g.add_argument("--upload-dir", metavar="DIR", help="where uploads added to the index are kept "
                   "(default INDEX/uploads)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from vlrt.serve.app import create_app
        from vlrt.serve.config import ServeConfig
    except ImportError as exc:
        raise VlrtError(f"vlrt serve needs the serve extra (pip install 'vlrt[serve]'): {exc}") from None
    given = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    config = ServeConfig.from_env(**given)
    if not _loopback(config.host) and not config.api_key:
        print(f"vlrt: warning: serving on {config.host} without an API key: anyone who reaches this port can "
              "use the service", file=sys.stderr)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("vlrt.serve")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    print(f"vlrt serve: http://{config.host}:{config.port}/ (loading the engine; /readyz says when ready)",
          file=sys.stderr)
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning",
                timeout_graceful_shutdown=int(config.request_timeout_s))
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
