"""Decoding for a server: untrusted files are decoded in a bounded pool of worker processes, each
under a memory cap, so that a hostile file fails or kills a worker, never the server.

A worker is started with the "spawn" method (the server has threads; a forked copy would inherit
their held locks), imports what decoding needs, then caps its own address space (RLIMIT_AS) at
what it uses then plus `MediaLimits.worker_memory_mb`. It runs one job at a time, sent over a
Pipe: the file is checked against the limits, then `ClipLoader` decodes it as the runtime does.
FFmpeg is told the worker has one CPU: its scaler would otherwise start a thread per CPU for each
conversion, and RLIMIT_AS counts each thread's stack whole (8 MiB), touched or not; where that
cannot be done, the cap grows by room for those stacks.

Where each failure is caught, and what the caller gets (a `MediaError`):
- an empty file (400) or one over `max_bytes` (413): in the server process, from its size;
- a frame size, duration or frame count over the limits (422): in the worker, from what the
  container states, before vlrt decodes a frame. FFmpeg's stream probe inside `av.open` decodes a
  frame first where it needs one; it is told the frame size limit where PyAV passes it options,
  which it does not for formats whose streams appear only while probing (MPEG-PS, MPEG-TS): there
  the memory cap bounds it (an 8192x8192 H.264 frame in an .mpg costs 160 MB to open);
- the loader's VlrtError (422 "undecodable"), with its reason;
- out of memory under the cap (422 "worker_died"): the worker answers, then exits so that a fresh
  one with a clean heap takes its place. FFmpeg reports some allocations that fail inside a
  decoder as corrupt data: those are answered as undecodable, and the worker stays;
- a worker that dies (killed, a crash; 422 "worker_died"), or a job over `timeout_s` (504, the
  worker is killed): the worker is replaced and the pool serves on.
A worker is never given a job while it owes a reply: a caller that is cancelled (the client went
away) leaves its job to run to its end or its timeout, and the reply is dropped.
"""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import io
import multiprocessing
import os
import signal
import time
from collections import deque
from typing import Any

import numpy as np

from vlrt.errors import VlrtError
from vlrt.runtime.pipeline import ClipLoader
from vlrt.runtime.preprocess import MODES, Mode
from vlrt.runtime.video import MAX_PIXELS, MAX_SIDE, OPEN_TIMEOUT_S, ffmpeg_reason, probe, read_frames_at, y4m_size

__all__ = ["DecodePool", "Decoded", "MediaError", "MediaLimits"]

MIB = 2**20
STARTUP_TIMEOUT_S = 120.0  # a new worker's imports, on a loaded machine
SCALER_CONTEXTS = 2  # FFmpeg scaler contexts (each with a thread per CPU) a job may hold at once
_THREAD_GUARD = 64 * 1024  # a thread's guard page(s) and TLS, rounded up


@dataclasses.dataclass(frozen=True)
class MediaLimits:
    """What a decode worker accepts, and what it may use. The pool reads them per job."""

    max_bytes: int = 256 * MIB  # a larger file is refused (413) before decoding
    max_duration_s: float = 3600.0  # refused (422) when the container says longer
    max_width: int = 7680  # refused (422) when the stream header says larger
    max_height: int = 4320
    max_frames: int = 1_000_000  # frames the container reports
    worker_memory_mb: int = 1024  # RLIMIT_AS over the worker's address space after its imports
    timeout_s: float = 60.0  # a longer job: its worker is killed and replaced (504)


class MediaError(VlrtError):
    """A file the pool did not decode. `status`: the HTTP status to answer (400, 413, 422, 503,
    504); `kind`: a short label for metrics ("empty", "too_large", "limit", "undecodable",
    "worker_died", "timeout", "closed")."""

    def __init__(self, reason: str, *, status: int = 422, kind: str = "undecodable") -> None:
        super().__init__(reason)
        self.reason, self.status, self.kind = reason, status, kind


@dataclasses.dataclass
class Decoded:
    pixels: np.ndarray  # (T, 3, S, S) float32, T = the manifest's max_frames, zero after n_frames
    n_frames: int
    row: dict[str, Any]  # Clip.row(): path, frames, num_frames, fps, duration, width, height, codec
    seconds: float  # time spent in the worker


# -- the worker process ------------------------------------------------------------------------

def _serve(conn: Any, manifest: dict[str, Any], mode: Mode, memory_mb: int) -> None:
    """A worker's life: its imports, the memory cap, then one job at a time until the server
    sends None or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the server stops us
    try:
        import av  # noqa: F401 - imported before the cap: code is not a job's memory
        from PIL import Image  # noqa: F401

        loader = ClipLoader(manifest, mode=mode)
    except Exception as exc:  # noqa: BLE001 - the server answers it (503)
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    gc.freeze()  # the imports' objects: the collection after each job skips them
    cap = _cap_address_space(memory_mb, 0 if _one_cpu_for_ffmpeg() else _thread_room())
    try:
        conn.send(("ready", *cap))
        while (job := conn.recv()) is not None:
            reply = _answer(loader, memory_mb, *job)
            try:
                conn.send(reply)
            except MemoryError:  # pickling the result under the cap
                reply = _out_of_memory(job[1], memory_mb)
                conn.send(reply)
            if reply[0] == "error" and reply[4]:
                return  # a fresh worker takes over
            gc.collect()  # PyAV's frames hold FFmpeg scaler contexts (and their threads) in cycles
    except (EOFError, OSError):
        return  # the server is gone


def _answer(loader: ClipLoader, memory_mb: int, op: str, path: str, limits: MediaLimits,
            options: dict[str, Any]) -> tuple:
    """("ok", value, seconds) or ("error", reason, status, kind, worker must restart)."""
    start = time.perf_counter()
    try:
        _check_container(path, limits)
        value = _clip(loader, path) if op == "clip" else _poster(path, **options)
        return "ok", value, time.perf_counter() - start
    except MediaError as exc:
        return "error", exc.reason, exc.status, exc.kind, False
    except VlrtError as exc:
        if os.strerror(errno.ENOMEM).lower() in str(exc).lower():  # FFmpeg's ENOMEM, in video.py's words
            return _out_of_memory(path, memory_mb)
        return "error", str(exc), 422, "undecodable", False
    except MemoryError:  # numpy, Pillow, PyAV (av.error.MemoryError is one too)
        return _out_of_memory(path, memory_mb)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:  # FFmpeg could not start a thread: no room for its stack
            return _out_of_memory(path, memory_mb)
        return _crashed(path, exc)
    except Exception as exc:  # noqa: BLE001 - a decoder crash on one file; a fresh worker takes the next
        return _crashed(path, exc)


def _crashed(path: str, exc: Exception) -> tuple:
    reason = ffmpeg_reason(exc) if getattr(exc, "strerror", None) else str(exc)
    return "error", f"{path}: {type(exc).__name__}: {reason}", 422, "undecodable", True


def _out_of_memory(path: str, memory_mb: int) -> tuple:
    return "error", f"{path}: needs more memory than a decode worker may use ({memory_mb} MiB)", 422, "worker_died", True


def _clip(loader: ClipLoader, path: str) -> tuple[np.ndarray, int, dict[str, Any]]:
    clip = loader(path)
    return clip.pixels, clip.n_frames, clip.row()


def _poster(path: str, width: int) -> bytes:
    """The frame shown at the middle of the video (an image's only frame) as a JPEG `width` px wide."""
    from PIL import Image

    info = probe(path)
    rgb = read_frames_at(path, [info.duration / 2], info=info)[0]  # (H, W, 3) uint8, upright
    height = max(1, round(width * rgb.shape[0] / rgb.shape[1]))
    image = Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _check_container(path: str, limits: MediaLimits) -> None:
    """Refuse what the container says is over the limits, before vlrt decodes a frame. A file
    FFmpeg cannot open passes: the loader then says what is wrong, in the runtime's words."""
    import av

    _check_y4m(path, limits)
    try:
        container = av.open(path, timeout=OPEN_TIMEOUT_S, options=_probe_options(limits))
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return
    with container:
        streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        for stream in streams:
            _check_frame_size(path, stream.codec_context, limits)
            if stream.frames > limits.max_frames:
                raise MediaError(f"{path}: the container says it holds {stream.frames} frames, over the limit "
                                 f"of {limits.max_frames}", kind="limit")
        seconds = _stated_seconds(container, streams)
        if seconds > limits.max_duration_s:
            raise MediaError(f"{path}: the container says it lasts {seconds:.6g} s, over the limit of "
                             f"{limits.max_duration_s:g} s", kind="limit")


def _probe_options(limits: MediaLimits) -> dict[str, str]:
    """FFmpeg's own size check for its probing decode, at the limits (padded for alignment, as
    video.DECODER_LIMITS is), so that a larger frame's buffers are not allocated; PyAV passes it
    only where the streams are known before the probe (see the module docstring)."""
    side = min(max(limits.max_width, limits.max_height), MAX_SIDE)
    return {"max_pixels": str(min(limits.max_width * limits.max_height, MAX_PIXELS) + 192 * side)}


def _check_frame_size(path: str, cc: Any, limits: MediaLimits) -> None:
    box = f"{limits.max_width}x{limits.max_height}"
    if not (cc.width and cc.height):  # FFmpeg's probe refused the size (`_probe_options`), or found none
        raise MediaError(f"{path}: the {cc.name} stream's frame size is over the limit of {box}, or unknown "
                         "(FFmpeg's probe read none)", kind="limit")
    if not _fits(cc.width, cc.height, limits):
        raise MediaError(f"{path}: frame size {cc.width}x{cc.height} is over the limit of {box}", kind="limit")


def _fits(width: int, height: int, limits: MediaLimits) -> bool:
    """Within the limits in either orientation (a portrait 2160x3840 video fits 3840x2160)."""
    return ((width <= limits.max_width and height <= limits.max_height)
            or (width <= limits.max_height and height <= limits.max_width))


def _stated_seconds(container: Any, streams: list[Any]) -> float:
    """The duration the container states (0.0 when it states none)."""
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return max((float(s.duration * s.time_base) for s in streams if s.duration and s.time_base), default=0.0)


def _check_y4m(path: str, limits: MediaLimits) -> None:
    """A YUV4MPEG2 file's frame is read whole, as one packet, while FFmpeg opens the file: its
    header's claim is checked first."""
    size = y4m_size(path)
    if size is None:
        return
    width, height = size
    if not _fits(width, height, limits):
        raise MediaError(f"{path}: claimed frame size {width}x{height} is over the limit of "
                         f"{limits.max_width}x{limits.max_height}", kind="limit")


def _no_memory_cap() -> str | None:
    """Why this platform cannot cap a worker's memory; None when it can."""
    try:
        import resource

        resource.RLIMIT_AS  # noqa: B018 - not on every platform
    except (ImportError, AttributeError):
        return "no memory cap: this platform has no RLIMIT_AS"
    if _address_space() is None:
        return "no memory cap: no VmSize in /proc/self/status to start it from"
    return None


def _address_space() -> int | None:
    """This process's address space in bytes (VmSize), or None where /proc does not say."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _one_cpu_for_ffmpeg() -> bool:
    """Tell this process's FFmpeg (PyAV's copy of libavutil) that there is one CPU, so that its
    scaler starts no threads, as the decoder starts none (video.py: one thread per video). False
    where the library is not found (linked in statically, or no /proc)."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libraries = {line.split()[-1] for line in f if "/libavutil" in line}
    except OSError:
        return False
    for library in libraries:
        try:
            ctypes.CDLL(library).av_cpu_force_count(1)
            return True
        except (OSError, AttributeError):
            continue
    return False


def _thread_room() -> int:
    """Address space for the stacks of FFmpeg's scaler threads (one per CPU, per context), where
    `_one_cpu_for_ffmpeg` could not stop them."""
    import resource

    stack = resource.getrlimit(resource.RLIMIT_STACK)[0]
    stack = stack if 0 < stack <= 64 * MIB else 8 * MIB  # unlimited: glibc's own default
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return SCALER_CONTEXTS * cpus * (stack + _THREAD_GUARD)


def _cap_address_space(memory_mb: int, threads: int) -> tuple[int | None, str]:
    """Cap this process's address space at what it uses now + `memory_mb` MiB + `threads` bytes
    for thread stacks. Returns (the MiB granted, or None where there is no cap) and a note."""
    why_not = _no_memory_cap()
    if why_not:
        return None, why_not
    import resource

    limit = _address_space() + memory_mb * MIB + threads
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # the hard limit too: no way back
    except (ValueError, OSError) as exc:
        return None, f"no memory cap: setrlimit(RLIMIT_AS) failed ({exc})"
    stacks = f", and {threads // MIB} MiB for FFmpeg's thread stacks" if threads else ""
    return memory_mb, f"RLIMIT_AS: {memory_mb} MiB over each decode worker's address space after its imports{stacks}"


# -- the server's side ---------------------------------------------------------------------------

class _Worker:
    """One worker process and the server's end of its pipe."""

    def __init__(self, context: Any, manifest: dict[str, Any], mode: Mode, memory_mb: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, manifest, mode, memory_mb),
                                       name="vlrt-decode", daemon=True)
        self.process.start()
        child.close()  # the worker's end lives in the worker only: its death reads as EOF here
        self.ready = False

    def exit_reason(self) -> str:
        """How the process ended ("exit code -9, SIGKILL"), waiting a moment for it to end."""
        self.process.join(1.0)
        code = self.process.exitcode
        if code is None:
            return "it closed its pipe and is still running"
        if code < 0:
            try:
                return f"exit code {code}, {signal.Signals(-code).name}"
            except ValueError:
                pass
        return f"exit code {code}"

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(1.0)
        self.conn.close()


async def _readable(conn: Any, timeout: float) -> None:
    """Wait, without blocking the event loop, until `conn` has data (or EOF); TimeoutError after
    `timeout` seconds. The pipe is left in blocking mode: uvloop's add_reader (uvicorn's loop
    where uvloop is installed, and Ray Serve's) makes it non-blocking, and `conn.recv()` of a
    reply larger than the pipe's buffer would then fail half-read."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = conn.fileno()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, timeout)
    finally:
        loop.remove_reader(fd)
        os.set_blocking(fd, True)


def _check_file_size(path: str, limits: MediaLimits) -> None:
    """Refuse an empty or too large file from its size alone; a path that cannot be read passes
    (the worker's loader says what is wrong with it)."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return
    if size > limits.max_bytes:
        raise MediaError(f"{path}: {size} bytes, over the limit of {limits.max_bytes}", status=413, kind="too_large")
    if size == 0:
        raise MediaError(f"{path}: the file is empty (0 bytes)", status=400, kind="empty")


def _closed_error() -> MediaError:
    return MediaError("the decode pool is closed", status=503, kind="closed")


class DecodePool:
    """`workers` decode processes, one job each at a time; callers beyond them wait their turn.

    `limits` may be replaced at any time (`pool.limits = ...`): a job reads them when it starts,
    except `worker_memory_mb`, which a worker reads when it starts. `memory_cap` is the MiB a worker
    may use (None where the platform cannot cap it) and `memory_note` says how it is done.
    """

    def __init__(self, manifest: dict[str, Any], *, workers: int = 2, limits: MediaLimits | None = None,
                 mode: Mode = "exact") -> None:
        if mode not in MODES:
            raise VlrtError(f"decode mode must be one of {', '.join(MODES)}, got {mode!r}")
        if workers < 1:
            raise VlrtError(f"a decode pool needs at least 1 worker, got {workers}")
        ClipLoader(manifest, mode=mode)  # a bad manifest fails here, not in every worker
        self.limits = limits if limits is not None else MediaLimits()
        self.restarts = 0  # workers replaced so far
        self._start_args = (manifest, mode)
        self._context = multiprocessing.get_context("spawn")  # never fork a server with threads
        self._workers = [self._spawn() for _ in range(workers)]
        self._idle: deque[int] = deque(range(workers))  # slots in self._workers
        self._waiters: deque[asyncio.Future] = deque()
        self._jobs: set[asyncio.Task] = set()
        self._closed = False
        why_not = _no_memory_cap()
        self.memory_cap: int | None = None if why_not else self.limits.worker_memory_mb
        self.memory_note = why_not or f"RLIMIT_AS: {self.limits.worker_memory_mb} MiB per decode worker"

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def busy(self) -> int:
        return 0 if self._closed else self.size - len(self._idle)

    @property
    def pids(self) -> list[int]:
        """The workers' process ids, one per slot (a replaced worker's slot gets the new one's)."""
        return [w.process.pid for w in self._workers]

    async def clip(self, path: str) -> Decoded:
        """A video file, or an image as a one-frame clip, decoded and preprocessed as
        `ClipLoader(manifest, mode=mode)` does it. Raises MediaError."""
        (pixels, n_frames, row), seconds = await self._submit("clip", str(path), {})
        return Decoded(pixels, n_frames, row, seconds)

    async def poster(self, path: str, *, width: int = 320) -> bytes:
        """A JPEG of the frame shown at the middle of the video (or of the image), `width` px wide,
        its aspect kept. Raises MediaError."""
        if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= self.limits.max_width:
            raise MediaError(f"poster width must be 1..{self.limits.max_width} px, got {width!r}", status=400,
                             kind="limit")
        data, _ = await self._submit("poster", str(path), {"width": width})
        return data

    def close(self) -> None:
        """Stop the workers; jobs waiting or running, and later calls, raise MediaError ("closed")."""
        if self._closed:
            return
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(_closed_error())
        self._waiters.clear()
        for slot, worker in enumerate(self._workers):
            if slot in self._idle:
                worker.stop()
            elif worker.process.is_alive():  # its job sees EOF and closes the pipe
                worker.process.kill()
        self._idle.clear()

    # -- jobs -------------------------------------------------------------------------------
    async def _submit(self, op: str, path: str, options: dict[str, Any]) -> tuple[Any, float]:
        if self._closed:
            raise _closed_error()
        _check_file_size(path, self.limits)  # no worker is needed to refuse it
        slot = await self._acquire()
        job = asyncio.ensure_future(self._run(slot, (op, path, self.limits, options)))
        self._jobs.add(job)
        job.add_done_callback(self._job_done)
        # A cancelled caller leaves the job to finish: its worker owes the reply.
        return await asyncio.shield(job)

    def _job_done(self, job: asyncio.Task) -> None:
        self._jobs.discard(job)
        if not job.cancelled():
            job.exception()  # retrieved: a caller that went away would leave it unseen (and logged)

    async def _acquire(self) -> int:
        if self._idle:
            return self._idle.popleft()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())  # handed a worker as it was cancelled: pass it on
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _release(self, slot: int) -> None:
        if self._closed:
            self._workers[slot].stop()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._idle.append(slot)

    async def _run(self, slot: int, job: tuple) -> tuple[Any, float]:
        """Send `job` to the worker in `slot` and wait for its reply; the slot is released after."""
        try:
            await self._ensure_alive(slot)
            worker = self._workers[slot]
            try:
                worker.conn.send(job)
            except OSError:  # it died as the job was sent: read the EOF below
                pass
            reply = await self._receive(slot, job[1])
            if reply[0] == "error" and reply[4]:  # the worker exits after this reply
                self._replace(slot)
        except asyncio.CancelledError:  # the event loop is shutting down with the reply owed
            self._replace(slot)
            raise
        finally:
            self._release(slot)
        if reply[0] == "ok":
            return reply[1], reply[2]
        _, reason, status, kind, _ = reply
        raise MediaError(reason, status=status, kind=kind)

    async def _ensure_alive(self, slot: int) -> None:
        """A worker that died while idle is replaced; a new one is waited for (503 when it cannot start)."""
        if self._closed:
            raise _closed_error()
        if self._workers[slot].ready and not self._workers[slot].process.is_alive():
            self._replace(slot)
        worker = self._workers[slot]
        if worker.ready:
            return
        try:
            await _readable(worker.conn, STARTUP_TIMEOUT_S)
            message = worker.conn.recv()
        except (asyncio.TimeoutError, EOFError, OSError):
            message = ("failed", f"it did not start ({worker.exit_reason()})")
        if message[0] != "ready":
            self._replace(slot)
            if self._closed:
                raise _closed_error()
            raise MediaError(f"a decode worker could not start: {message[1]}", status=503, kind="worker_died")
        worker.ready = True
        self.memory_cap, self.memory_note = message[1], message[2]

    async def _receive(self, slot: int, path: str) -> tuple:
        worker = self._workers[slot]
        timeout = self.limits.timeout_s
        try:
            await _readable(worker.conn, timeout)
            return worker.conn.recv()
        except asyncio.TimeoutError:
            self._replace(slot)
            raise MediaError(f"{path}: decoding took longer than {timeout:g} s; the worker was stopped",
                             status=504, kind="timeout") from None
        except (EOFError, OSError):
            if self._closed:
                raise _closed_error() from None
            why = worker.exit_reason()
            self._replace(slot)
            raise MediaError(f"{path}: the decode worker died while decoding it ({why})", kind="worker_died") from None

    def _spawn(self) -> _Worker:
        return _Worker(self._context, *self._start_args, self.limits.worker_memory_mb)

    def _replace(self, slot: int) -> None:
        self._workers[slot].stop()
        if not self._closed:
            self._workers[slot] = self._spawn()
            self.restarts += 1
