"""`vlrt serve --ray`: the service as a Ray Serve deployment (replicas, autoscaling).

Each replica runs the same FastAPI app as `vlrt serve` (same endpoints, API key, limits, decode
workers, logs), with its batching queues built on Ray Serve's `@serve.batch` instead of vlrt's own
asyncio queue (`ServeBatcher`). A replica starts only once its engine and index are loaded, and
fails to start (Ray Serve retries it) when they cannot be, so the proxy never routes a request to
a replica that would answer 503. Ray Serve's HTTP proxy, on every node, spreads requests over the
replicas. Every replica answers with an `X-Vlrt-Replica` header naming itself; `/metrics` is the
answering replica's own.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from vlrt.errors import VlrtError
from vlrt.serve.batching import Batcher, Done, Overloaded
from vlrt.serve.config import ServeConfig

APP = "vlrt"  # the Ray Serve application and deployment name


@dataclasses.dataclass(frozen=True)
class Scaling:
    """How many replicas: `replicas` fixed, or autoscaling between `min_replicas` and
    `max_replicas` on `target_ongoing` requests per replica. `cpus`/`gpus`: what one replica
    reserves on the cluster (a GPU engine needs gpus=1)."""

    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing: float = 8.0
    cpus: float = 1.0
    gpus: float = 0.0

    def checked(self) -> "Scaling":
        auto = self.min_replicas is not None or self.max_replicas is not None
        if auto and (self.min_replicas is None or self.max_replicas is None):
            raise VlrtError("autoscaling needs both --min-replicas and --max-replicas")
        if auto and not 0 <= self.min_replicas <= self.max_replicas or (auto and self.max_replicas < 1):
            raise VlrtError(f"replicas: need 0 <= min ({self.min_replicas}) <= max ({self.max_replicas}), max >= 1")
        if self.replicas < 1:
            raise VlrtError(f"--replicas must be >= 1, got {self.replicas}")
        if self.target_ongoing <= 0 or self.cpus < 0 or self.gpus < 0:
            raise VlrtError("--target-ongoing must be > 0; --replica-cpus and --replica-gpus >= 0")
        return self

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None


@dataclasses.dataclass
class _Ticket:
    payload: Any
    queued_at: float
    waiting: bool = True


class ServeBatcher(Batcher):
    """`Batcher`'s interface and bounds over Ray Serve's `@serve.batch` (which must run in a
    replica): a batch leaves at `max_batch` items or `max_wait_s` after its first, and runs on
    this queue's own thread, so the replica's event loop keeps answering. A full queue raises
    `Overloaded` (answered 429), as in a single server."""

    def __init__(self, name: str, fn: Callable[[list[Any]], Sequence[Any]], *, max_batch: int, max_wait_s: float,
                 max_queue: int, observe: Callable[[int, float], None] | None = None) -> None:
        from ray import serve

        super().__init__(name, fn, max_batch=max_batch, max_wait_s=max_wait_s, max_queue=max_queue, observe=observe)
        self._waiting = 0  # submitted, not yet in a batch

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=max_wait_s)
        async def run(tickets: list[_Ticket]) -> list[Done]:
            start = time.perf_counter()
            for ticket in tickets:
                self._taken(ticket)
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._thread, self.fn, [t.payload for t in tickets])
            if len(results) != len(tickets):
                raise RuntimeError(f"{self.name} batch: {len(results)} results for {len(tickets)} items")
            took = time.perf_counter() - start
            self._batch_s.append(took)
            if self.observe is not None:
                self.observe(len(tickets), took)
            return [Done(r, start - t.queued_at, took, len(tickets)) for r, t in zip(results, tickets)]

        self._run = run

    @property
    def depth(self) -> int:
        return self._waiting

    def start(self) -> None:
        """Nothing to start: Ray Serve runs the batches."""

    async def submit(self, payload: Any) -> Done:
        if self._closing:
            raise Overloaded(self.name, self.depth, 1.0)
        if self._waiting >= self.max_queue:
            raise Overloaded(self.name, self._waiting, self.retry_after())
        ticket = _Ticket(payload, time.perf_counter())
        self._waiting += 1
        try:
            return await self._run(ticket)
        finally:  # a caller that went away before its batch: @serve.batch drops it
            self._taken(ticket)

    def _taken(self, ticket: "_Ticket") -> None:
        if ticket.waiting:
            ticket.waiting = False
            self._waiting -= 1

    async def stop(self) -> None:
        self._closing = True
        self._thread.shutdown(wait=True)


def application(config: ServeConfig, scaling: Scaling = Scaling()):
    """The service as a bound Ray Serve application (`serve.run(application(...))`): one
    deployment named "vlrt" whose replicas each run the FastAPI app. Paths in `config` are made
    absolute: replicas do not share the caller's working directory."""
    from ray import serve

    scaling = scaling.checked()
    if config.writable and (scaling.autoscaling or scaling.replicas > 1):
        raise VlrtError("--writable needs one replica: an index has one writer, and replicas would each hold "
                        "their own view of it")
    config = dataclasses.replace(config, **{k: os.path.abspath(v) for k in ("bundle", "index", "media_root",
                                                                            "upload_dir")
                                            if (v := getattr(config, k)) is not None}).checked()

    def build_app():
        from vlrt.serve.app import create_app, log_requests

        log_requests()  # to the replica's stderr: Ray's log files, and the driver's console on a local cluster
        app = create_app(config, batcher=ServeBatcher, load_first=True)
        replica = serve.get_replica_context().replica_id.unique_id

        @app.middleware("http")
        async def name_replica(request, call_next):
            response = await call_next(request)
            response.headers["X-Vlrt-Replica"] = replica
            return response

        return app

    class Replica:
        """One replica: the app, and Ray Serve's health check on its service."""

        def check_health(self) -> None:
            state = self.app.state.service.state
            if state != "ready":
                raise RuntimeError(f"vlrt serve: {state}")

    # Ray Serve's own cap on a replica's requests in flight is set above the app's queues, so that
    # the app's bounds answer 429 with Retry-After as a single server does.
    ongoing = config.text_queue + config.video_queue + config.decode_workers
    options: dict[str, Any] = {"name": APP, "max_ongoing_requests": ongoing,
                               "ray_actor_options": {"num_cpus": scaling.cpus, "num_gpus": scaling.gpus}}
    if scaling.autoscaling:
        options["autoscaling_config"] = {"min_replicas": scaling.min_replicas, "max_replicas": scaling.max_replicas,
                                         "target_ongoing_requests": scaling.target_ongoing}
    else:
        options["num_replicas"] = scaling.replicas
    deployment = serve.deployment(serve.ingress(build_app)(Replica), **options)
    return deployment.bind()


def serve_on_ray(config: ServeConfig, scaling: Scaling, address: str | None = None,
                 stop: threading.Event | None = None, ready: Callable[[str], None] | None = None) -> None:
    """Start (or join, with `address`) a Ray cluster, deploy the service on Ray Serve's HTTP proxy at
    config.host:config.port, and keep it up until `stop` is set, SIGTERM or Ctrl-C; then take the
    application down (and the cluster, when this call started it). `ready(url)` is called once
    every replica is up."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise VlrtError(f"vlrt serve --ray needs Ray Serve (pip install 'vlrt[ray]'): {exc}") from None
    app = application(config, scaling)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=address is None)
    stop = stop or threading.Event()
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    if previous is not None:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": config.host, "port": config.port,
                                  "request_timeout_s": config.request_timeout_s + 5})
        serve.run(app, name=APP, route_prefix="/")
        if ready is not None:
            ready(f"http://{config.host}:{config.port}")
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            print("vlrt serve: stopping", file=sys.stderr)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        serve.delete(APP)
        serve.shutdown()
        if started:
            ray.shutdown()
