"""Prometheus metrics of one service instance (its own registry, so that several apps in one
process, as in tests, do not share counters)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGES = ("queue", "decode", "encode", "search")
# seconds: from a sub-millisecond text batch to a minute-long decode
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("vlrt_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.latency = Histogram("vlrt_request_seconds", "Request latency, arrival to answer", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("vlrt_stage_seconds", "Time per stage of a request (decode includes sampling and "
                               "preprocessing, in a worker process)", ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("vlrt_queue_depth", "Items waiting in a batching queue", ["queue"], registry=r)
        self.batch_size = Histogram("vlrt_batch_size", "Items per encoder batch", ["queue"], buckets=BATCH_BUCKETS,
                                    registry=r)
        self.errors = Counter("vlrt_errors", "Requests that failed, by kind", ["kind"], registry=r)
        self.worker_restarts = Gauge("vlrt_decode_worker_restarts", "Decode workers replaced since start",
                                     registry=r)
        self.decode_busy = Gauge("vlrt_decode_workers_busy", "Decode workers working now", registry=r)
        self.index_size = Gauge("vlrt_index_videos", "Videos in the served index", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
