"""The decode pool: worker processes give the runtime's own pixels; every bad input, a memory cap
hit, a killed worker, a timeout and a cancelled caller end in a MediaError (or nothing) for that
job alone, and the pool decodes the next file correctly. The embedded model's manifest; videos
from tests/video_assets.py; the big frames below are one black H.264 frame, written in ~0.3 s
(4096x4096) and ~2 s (8192x8192)."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bad_corpus import y4m_header
from PIL import Image
from video_assets import frame_index, write_audio_only, write_big_frame, write_image, write_video

from vlrt.assets import unpack_default_bundle
from vlrt.runtime.bundle import Bundle
from vlrt.runtime.pipeline import ClipLoader
from vlrt.serve.media import Decoded, DecodePool, MediaError, MediaLimits


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return Bundle.open(unpack_default_bundle(tmp_path_factory.mktemp("bundle"))).manifest


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Good files, by name: two clips (2 s at 24 fps; 1 s at 30 fps), a PNG, and a 4096x4096 frame."""
    root = tmp_path_factory.mktemp("media")
    write_video(root / "good.mp4", frames=48, fps=24)
    write_video(root / "other.mp4", frames=30, fps=30, width=128, height=128, gop=6)
    write_image(root / "still.png", index=7)
    return {"good": root / "good.mp4", "other": root / "other.mp4", "still": root / "still.png",
            "big": write_big_frame(root / "big.mpg", 4096)}


@pytest.fixture(scope="module")
def expected(manifest, media):
    """What the runtime's loader gives in this process, per good file."""
    loader = ClipLoader(manifest)
    return {name: loader(media[name]) for name in ("good", "other", "still")}


@pytest.fixture(scope="module")
def pool(manifest):
    """Two workers, default limits; tests that change `limits` put them back."""
    p = DecodePool(manifest, workers=2)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def solo(manifest):
    """One worker: the one a job runs on is the one to kill."""
    p = DecodePool(manifest, workers=1)
    try:
        yield p
    finally:
        p.close()


@contextlib.contextmanager
def limited(pool: DecodePool, **changes):
    saved = pool.limits
    pool.limits = dataclasses.replace(saved, **changes)
    try:
        yield
    finally:
        pool.limits = saved


def assert_same(decoded: Decoded, clip) -> None:
    assert np.array_equal(decoded.pixels, clip.pixels)
    assert decoded.pixels.dtype == np.float32 and decoded.pixels.shape == clip.pixels.shape
    assert decoded.n_frames == clip.n_frames and decoded.row == clip.row()
    assert decoded.seconds > 0


async def refused(job) -> MediaError:
    with pytest.raises(MediaError) as caught:
        await job
    assert caught.value.reason and str(caught.value) == caught.value.reason
    return caught.value


async def started(pool: DecodePool, job) -> asyncio.Task:
    """`job` as a task, once a worker has it (its worker already running, so it is decoding)."""
    task = asyncio.ensure_future(job)
    while pool.busy == 0:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    return task


def wait_dead(pid: int, timeout: float = 10.0) -> None:
    """Until the process is gone or a zombie with no thread left (SIGKILL lands asynchronously,
    and a leader thread shows "Z" while its other threads still exit: not yet waitable)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
            if zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1:
                time.sleep(0.05)
                return
        except FileNotFoundError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still runs")


def test_videos_and_images_decode_as_the_runtime_does(pool, media, expected, tmp_path):
    async def run():
        clips = await asyncio.gather(*(pool.clip(str(media[n])) for n in ("good", "other", "still")))
        # an image with a name that does not say so: FFmpeg finds the PNG in its bytes
        upload = tmp_path / "upload.bin"
        upload.write_bytes(media["still"].read_bytes())
        return clips, await pool.clip(str(upload))

    (good, other, still), upload = asyncio.run(run())
    assert_same(good, expected["good"])
    assert_same(other, expected["other"])
    assert_same(still, expected["still"])
    assert good.n_frames == 8 and good.row["num_frames"] == 48 and good.row["width"] == 160
    assert still.n_frames == upload.n_frames == 1
    assert np.array_equal(upload.pixels, still.pixels)
    assert pool.busy == 0 and pool.size == 2
    if sys.platform == "linux":  # RLIMIT_AS and /proc/self/status
        assert pool.memory_cap == 1024 and "RLIMIT_AS" in pool.memory_note


def test_decodes_under_uvloop(manifest, media, expected):
    """uvicorn and Ray Serve run uvloop where it is installed; its add_reader leaves the pipe
    non-blocking, which must not cut a clip's reply (several pipe buffers) in half."""
    uvloop = pytest.importorskip("uvloop")
    p = DecodePool(manifest, workers=1)
    try:
        async def run():
            return [await p.clip(str(media[n])) for n in ("good", "other", "good")]

        for got, name in zip(uvloop.run(run()), ("good", "other", "good")):
            assert_same(got, expected[name])
        assert p.restarts == 0
    finally:
        p.close()


def test_poster_is_the_middle_frame_as_a_jpeg(pool, media):
    async def run():
        return await pool.poster(str(media["good"])), await pool.poster(str(media["still"]), width=80)

    video, still = asyncio.run(run())
    assert video[:2] == still[:2] == b"\xff\xd8"
    image = Image.open(io.BytesIO(video))
    assert image.format == "JPEG" and image.size == (320, 192)  # 160x96 scaled, aspect kept
    assert frame_index(np.asarray(image.convert("RGB"))) == 24  # shown at 1.0 s of 2.0 s
    image = Image.open(io.BytesIO(still))
    assert image.size == (80, 48) and frame_index(np.asarray(image.convert("RGB"))) == 7
    with pytest.raises(MediaError) as caught:
        asyncio.run(pool.poster(str(media["good"]), width=0))
    assert caught.value.status == 400


def _write_bad(root: Path, name: str, media: dict[str, Path]) -> Path:
    path = root / name
    good = media["good"].read_bytes()
    contents = {"empty.mp4": b"", "noise.mp4": np.random.default_rng(0).bytes(20000),
                "half.mp4": good[: len(good) // 2], "text.mp4": b"just some words, no video\n" * 40,
                "wide.y4m": y4m_header(8000, 64) + b"FRAME\n" + bytes(100)}
    if name in contents:
        path.write_bytes(contents[name])
    elif name == "audio.m4a":
        write_audio_only(path)
    elif name != "missing.mp4":
        path.write_bytes(good)  # a good video, refused by the limits
    return path


# (file, limits changed, status, kind, words in the reason)
BAD = [
    ("empty.mp4", {}, 400, "empty", "empty (0 bytes)"),
    ("noise.mp4", {}, 422, "undecodable", "cannot open as a video or image"),
    ("half.mp4", {}, 422, "undecodable", "cannot open as a video or image"),  # no index (moov) yet
    ("text.mp4", {}, 422, "undecodable", "cannot open as a video or image"),
    ("audio.m4a", {}, 422, "undecodable", "no video stream"),
    ("missing.mp4", {}, 422, "undecodable", "no such file"),
    ("big.mp4", {"max_bytes": 1000}, 413, "too_large", "over the limit of 1000"),
    ("wide.mp4", {"max_width": 159, "max_height": 150}, 422, "limit", "frame size 160x96 is over the limit of 159x150"),
    ("tall.mp4", {"max_width": 150, "max_height": 95}, 422, "limit", "frame size 160x96 is over the limit of 150x95"),
    ("long.mp4", {"max_duration_s": 1.5}, 422, "limit", "lasts 2 s, over the limit of 1.5 s"),
    ("many.mp4", {"max_frames": 47}, 422, "limit", "holds 48 frames, over the limit of 47"),
    ("wide.y4m", {}, 422, "limit", "claimed frame size 8000x64 is over the limit of 7680x4320"),
]


@pytest.mark.parametrize("name, changes, status, kind, words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_fails_its_job_only(pool, media, expected, tmp_path, capfd, name, changes, status, kind, words):
    path = _write_bad(tmp_path, name, media)
    restarts = pool.restarts

    async def run():
        with limited(pool, **changes):
            err = await refused(pool.clip(str(path)))
        return err, await pool.clip(str(media["good"]))

    err, after = asyncio.run(run())
    assert (err.status, err.kind) == (status, kind)
    assert words in err.reason and (name == "missing.mp4" or str(path) in err.reason)
    assert_same(after, expected["good"])
    assert pool.restarts == restarts and pool.busy == 0
    assert capfd.readouterr() == ("", "")


def test_a_frame_over_the_memory_cap_fails_and_the_worker_is_replaced(manifest, pool, media, expected, capfd):
    """The 4096x4096 frame decodes in a default worker (1024 MiB) but needs more than 64 MiB: the
    worker answers, exits and is replaced."""
    assert asyncio.run(pool.clip(str(media["big"]))).n_frames == 1
    capped = DecodePool(manifest, workers=1, limits=MediaLimits(worker_memory_mb=64))
    try:
        async def run():
            err = await refused(capped.clip(str(media["big"])))
            return err, await capped.clip(str(media["good"]))

        err, after = asyncio.run(run())
        assert (err.status, err.kind) == (422, "worker_died")
        assert "needs more memory than a decode worker may use (64 MiB)" in err.reason
        assert capped.restarts == 1 and capped.memory_cap == 64
        assert_same(after, expected["good"])
    finally:
        capped.close()
    assert capfd.readouterr() == ("", "")  # the workers print nothing, dying or not


def test_a_huge_frame_in_an_mpg_is_refused_by_its_size(pool, media, expected, tmp_path):
    """8192x8192 (67 Mpx, within the runtime's own limits) in a container that states no size:
    FFmpeg's probe finds it while opening; refused before vlrt decodes it, the worker lives on."""
    huge = write_big_frame(tmp_path / "huge.mpg", 8192)
    restarts = pool.restarts

    async def run():
        err = await refused(pool.clip(str(huge)))
        return err, await pool.clip(str(media["good"]))

    err, after = asyncio.run(run())
    assert (err.status, err.kind) == (422, "limit")
    assert "frame size 8192x8192 is over the limit of 7680x4320" in err.reason
    assert_same(after, expected["good"])
    assert pool.restarts == restarts


def test_a_worker_killed_mid_job_or_between_jobs(solo, media, expected, capfd):
    async def run():
        await solo.clip(str(media["good"]))  # the worker is up
        pid, restarts = solo.pids[0], solo.restarts
        job = await started(solo, solo.clip(str(media["big"])))
        os.kill(pid, signal.SIGKILL)
        err = await refused(job)
        assert (err.status, err.kind) == (422, "worker_died")
        assert "exit code -9, SIGKILL" in err.reason and str(media["big"]) in err.reason
        assert solo.restarts == restarts + 1 and solo.pids[0] != pid and solo.busy == 0
        assert_same(await solo.clip(str(media["good"])), expected["good"])
        # killed while idle: the next job goes to its replacement
        pid = solo.pids[0]
        os.kill(pid, signal.SIGKILL)
        wait_dead(pid)
        assert_same(await solo.clip(str(media["other"])), expected["other"])
        assert solo.restarts == restarts + 2 and solo.pids[0] != pid

    asyncio.run(run())
    assert capfd.readouterr() == ("", "")


def test_a_job_over_the_timeout_kills_its_worker(solo, media, expected):
    async def run():
        with limited(solo, timeout_s=0.05):  # the 4096x4096 frame takes ~0.5 s
            err = await refused(solo.clip(str(media["big"])))
        return err, await solo.clip(str(media["good"]))

    restarts, pid = solo.restarts, solo.pids[0]
    err, after = asyncio.run(run())
    assert (err.status, err.kind) == (504, "timeout") and "longer than 0.05 s" in err.reason
    assert solo.restarts == restarts + 1 and solo.pids[0] != pid
    assert_same(after, expected["good"])


def test_a_cancelled_caller_leaves_the_pool_consistent(solo, media, expected):
    async def run():
        await solo.clip(str(media["good"]))
        restarts, pid = solo.restarts, solo.pids[0]
        slow = await started(solo, solo.clip(str(media["big"])))
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert solo.busy == 1  # its worker still owes the reply, and gets no other job meanwhile
        first = asyncio.ensure_future(solo.clip(str(media["good"])))
        gone = asyncio.ensure_future(solo.clip(str(media["still"])))
        second = asyncio.ensure_future(solo.clip(str(media["other"])))
        await asyncio.sleep(0.01)
        gone.cancel()  # cancelled while waiting for a worker
        results = await asyncio.gather(first, second)
        assert solo.busy == 0 and solo.restarts == restarts and solo.pids[0] == pid
        return results

    good, other = asyncio.run(run())
    assert_same(good, expected["good"])
    assert_same(other, expected["other"])


def test_close_answers_every_job_closed(manifest, media):
    pool = DecodePool(manifest, workers=1)

    async def run():
        running = asyncio.ensure_future(pool.clip(str(media["good"])))
        waiting = asyncio.ensure_future(pool.clip(str(media["good"])))
        await asyncio.sleep(0.01)
        assert pool.busy == 1
        pool.close()
        errors = [await refused(job) for job in (running, waiting)]
        errors.append(await refused(pool.poster(str(media["good"]))))
        return errors

    try:
        errors = asyncio.run(run())
    finally:
        pool.close()
    assert [(e.status, e.kind) for e in errors] == [(503, "closed")] * 3
    assert pool.busy == 0
