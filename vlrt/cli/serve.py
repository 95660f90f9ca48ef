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

  vlrt serve ... --ray [ADDRESS] --replicas N       the same app as Ray Serve replicas
  vlrt serve ... --ray --min-replicas 1 --max-replicas 8     ... autoscaled

--ray deploys the service on Ray Serve (`pip install vlrt[ray]`): a local cluster, or the one at
--ray=ADDRESS (auto on a cluster node; every node needs vlrt and the bundle and index at the same
paths). Ray Serve's proxy listens on --host/--port and spreads requests over the replicas; each
replica loads its own engine and batches with @serve.batch; its logs go to Ray's log files.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
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
    r = p.add_argument_group("Ray Serve")
    r.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="serve as a Ray Serve deployment: on a local cluster, or on the cluster at ADDRESS")
    r.add_argument("--replicas", type=int, help="replicas (default 1)")
    r.add_argument("--min-replicas", type=int, help="autoscaling: fewest replicas (with --max-replicas)")
    r.add_argument("--max-replicas", type=int, help="autoscaling: most replicas")
    r.add_argument("--target-ongoing", type=float, help="autoscaling: requests in flight per replica "
                   "that it aims at (default 8)")
    r.add_argument("--replica-cpus", type=float, help="CPUs one replica reserves (default 1)")
    r.add_argument("--replica-gpus", type=float, help="GPUs one replica reserves (default 0; 1 for a GPU engine)")
    p.set_defaults(func=run)


RAY_FLAGS = {"replicas": "replicas", "min_replicas": "min_replicas", "max_replicas": "max_replicas",
             "target_ongoing": "target_ongoing", "replica_cpus": "cpus", "replica_gpus": "gpus"}


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from vlrt.serve.app import create_app, log_requests
        from vlrt.serve.config import ServeConfig
    except ImportError as exc:
        raise VlrtError(f"vlrt serve needs the serve extra (pip install 'vlrt[serve]'): {exc}") from None
    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "ray", *RAY_FLAGS)}
    scaling = {RAY_FLAGS[k]: getattr(args, k) for k in RAY_FLAGS if getattr(args, k) is not None}
    if args.ray is None and scaling:
        raise VlrtError(f"--{next(iter(k for k in RAY_FLAGS if getattr(args, k) is not None)).replace('_', '-')} "
                        "sets Ray Serve replicas; add --ray")
    if args.ray not in (None, "local") and os.path.exists(args.ray):
        raise VlrtError(f"--ray {args.ray}: that is a path, not a cluster address; put the bundle before --ray, "
                        "or write --ray=ADDRESS")
    config = ServeConfig.from_env(**given)
    if not _loopback(config.host) and not config.api_key:
        print(f"vlrt: warning: serving on {config.host} without an API key: anyone who reaches this port can "
              "use the service", file=sys.stderr)
    log_requests()
    if args.ray is not None:
        from vlrt.serve.ray_serve import Scaling, serve_on_ray

        scale = Scaling(**scaling)
        print(f"vlrt serve: starting Ray Serve replicas ({_replicas(scale.checked())}) on "
              f"{'a local Ray cluster' if args.ray == 'local' else args.ray}", file=sys.stderr)
        serve_on_ray(config, scale, None if args.ray == "local" else args.ray,
                     ready=lambda url: print(f"vlrt serve: {url}/ (every replica ready; Ctrl-C stops)", file=sys.stderr))
        return 0
    print(f"vlrt serve: http://{config.host}:{config.port}/ (loading the engine; /readyz says when ready)",
          file=sys.stderr)
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning",
                timeout_graceful_shutdown=int(config.request_timeout_s))
    return 0


def _replicas(scale) -> str:
    if scale.autoscaling:
        return f"{scale.min_replicas} to {scale.max_replicas}, aiming at {scale.target_ongoing:g} requests each"
    return str(scale.replicas)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
