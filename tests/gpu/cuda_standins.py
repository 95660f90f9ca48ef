"""Stand-ins for the CUDA driver and for torch.cuda that write what the GPU code asks of them, in
order, to one log: the ordering rules of vlrt.gpu (the primary context's flags before anything
initialises CUDA; stream waits around NVDEC's surfaces, the clips and the encoder) are checked
with them on a machine without a GPU. `install` puts them where vlrt.gpu.device looks them up.
"""
from __future__ import annotations

import contextlib
import itertools

import torch

from vlrt.gpu import device as gpu_device

BLOCKING_SYNC = gpu_device.CU_CTX_SCHED_BLOCKING_SYNC


class FakeDriver:
    """The calls `share_primary_context` makes. `set_rc` is what setting the flags answers;
    `sticks=False` leaves the flags unchanged although the call succeeds."""

    def __init__(self, log, *, flags=0, active=False, set_rc=0, sticks=True):
        self.log, self.flags, self.active, self.set_rc, self.sticks = log, flags, active, set_rc, sticks

    def init(self):
        return 0

    def device(self, ordinal):
        return 0, ordinal

    def primary_state(self, dev):
        return 0, self.flags, self.active

    def set_primary_flags(self, dev, flags):
        self.log.append(f"set flags {flags:#x}")
        if self.set_rc == 0 and self.sticks:
            self.flags = flags
        return self.set_rc

    def error_name(self, rc):
        return f"CUresult {rc}"


class FakeStream:
    def __init__(self, log, name, device=None):
        self.log, self.name = log, name
        self.device = device if device is not None else torch.device("cuda", 0)

    def wait_stream(self, other):
        self.log.append(f"{self.name} waits for {other.name}")

    def wait_event(self, event):
        self.log.append(f"{self.name} waits for {event.name}")

    def __repr__(self):
        return f"<stream {self.name}>"


class FakeEvent:
    def __init__(self, log, number):
        self.log, self.name = log, f"event{number}"

    def record(self, stream):
        self.name = f"{self.name}@{stream.name}"
        self.log.append(f"{stream.name} records {self.name}")


class FakeCuda:
    """torch.cuda as vlrt.gpu.device calls it. Anything that would initialise CUDA writes
    "cuda init"; new streams are stream1, stream2, ...; the legacy default stream is "legacy"."""

    def __init__(self, log, *, initialized=False):
        self.log, self.initialized = log, initialized
        self.legacy = self.current = FakeStream(log, "legacy")
        self._streams, self._events = itertools.count(1), itertools.count(1)

    def is_available(self):
        return True

    def is_initialized(self):
        return self.initialized

    def current_device(self):
        self._init()
        return 0

    def get_device_capability(self, device=None):
        self._init()
        return (9, 0)

    def _init(self):
        self.log.append("cuda init")
        self.initialized = True

    def Stream(self, device=None, priority=0):  # torch.cuda's name
        stream = FakeStream(self.log, f"stream{next(self._streams)}", device)
        self.log.append(f"new {stream.name} (priority {priority})")
        return stream

    def Event(self):  # torch.cuda's name
        return FakeEvent(self.log, next(self._events))

    def current_stream(self, device=None):
        return self.current

    def default_stream(self, device=None):
        return self.legacy

    @contextlib.contextmanager
    def stream(self, stream):
        before, self.current = self.current, stream
        try:
            yield
        finally:
            self.current = before


def install(monkeypatch, log, **driver):
    """FakeCuda and FakeDriver(**driver) in place of torch.cuda and libcuda.so.1; record_use logs."""
    cuda, drv = FakeCuda(log), FakeDriver(log, **driver)
    monkeypatch.setattr(gpu_device, "_cuda", lambda: cuda)
    monkeypatch.setattr(gpu_device, "_driver", lambda: drv)
    monkeypatch.setattr(gpu_device, "record_use", lambda t, s: log.append(f"{tuple(t.shape)} used on {s.name}"))
    return cuda, drv
