"""vlrt.gpu.device: the CUDA primary context's flags, set for FFmpeg's NVDEC through the driver,
and the stream helpers' waits, checked with stand-ins for the driver and torch.cuda
(tests/gpu/cuda_standins.py). CPU-only; the real driver is exercised by the cuda tests of
tests/gpu/test_gpu_decode.py."""
import pytest
import torch
from cuda_standins import BLOCKING_SYNC, FakeStream, install

from vlrt.gpu import device as gpu_device
from vlrt.gpu.device import (
    CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE,
    borrowed_stream,
    cuda_ordinal,
    legacy_waits_for,
    share_primary_context,
    wait_event,
    wait_for_legacy,
)


def test_the_cpu_needs_no_driver(monkeypatch):
    monkeypatch.setattr(gpu_device, "_driver", lambda: pytest.fail("the driver was loaded for the CPU"))
    assert share_primary_context("cpu") is None and share_primary_context(torch.device("cpu")) is None


@pytest.mark.parametrize("active", [False, True])
def test_flags_are_set_when_they_differ(monkeypatch, active):
    """Inactive: every driver allows it. Active (torch got there first): cuDevicePrimaryCtxSetFlags_v2."""
    log = []
    _, drv = install(monkeypatch, log, flags=0, active=active)
    assert share_primary_context("cuda:0") is None
    assert log == [f"set flags {BLOCKING_SYNC:#x}"] and drv.flags == BLOCKING_SYNC


def test_flags_already_right_are_left_alone(monkeypatch):
    log = []
    install(monkeypatch, log, flags=BLOCKING_SYNC, active=True)
    assert share_primary_context(None) is None and log == []


def test_a_driver_that_cannot_change_an_active_context_gives_the_reason(monkeypatch):
    install(monkeypatch, [], flags=0, active=True, set_rc=CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE)
    reason = share_primary_context("cuda:0")
    assert "primary context of device 0 is active with flags 0x0" in reason
    assert "cannot change once active" in reason and "before anything else uses CUDA" in reason


@pytest.mark.parametrize("set_rc, words", [(1, "setting flags 0x4 failed: CUresult 1"),
                                           (0, "with flags 0x0 after setting flags 0x4")])
def test_other_failures_give_the_reason(monkeypatch, set_rc, words):
    install(monkeypatch, [], flags=0, set_rc=set_rc, sticks=False)
    assert words in share_primary_context("cuda:0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without the CUDA driver")
def test_without_the_driver_library_the_reason_names_it():
    gpu_device._driver.cache_clear()
    try:
        reason = share_primary_context("cuda:0")
    finally:
        gpu_device._driver.cache_clear()
    assert reason.startswith("the CUDA driver library (libcuda.so.1) cannot be used")


def test_the_ordinal_is_found_without_initialising_cuda(monkeypatch):
    log = []
    cuda, _ = install(monkeypatch, log)
    assert cuda_ordinal(None) == 0 and cuda_ordinal("cuda") == 0 and cuda_ordinal("cuda:2") == 2
    assert cuda_ordinal(3) == 3 and cuda_ordinal(torch.device("cuda", 1)) == 1
    assert cuda_ordinal("cpu") is None and log == []
    cuda.initialized = True  # then torch's current device counts, and asking costs nothing
    assert cuda_ordinal(None) == 0 and log == ["cuda init"]


def test_nvdec_surfaces_are_ordered_both_ways(monkeypatch):
    log = []
    cuda, _ = install(monkeypatch, log)
    side = FakeStream(log, "decode")
    wait_for_legacy(side)
    legacy_waits_for(side)
    assert log == ["decode waits for legacy", "decode records event1@decode", "legacy waits for event1@decode"]
    log.clear()
    wait_for_legacy(cuda.legacy), legacy_waits_for(cuda.legacy), wait_for_legacy(None), legacy_waits_for(None)
    assert log == []


def test_a_borrowed_stream_waits_for_the_caller_and_the_caller_for_it(monkeypatch):
    log = []
    cuda, _ = install(monkeypatch, log)
    own = FakeStream(log, "encoder")
    with borrowed_stream(own) as made:
        assert cuda.current_stream() is own
        log.append("work")
        made.append(torch.zeros(2))
    assert cuda.current_stream() is cuda.legacy
    assert log == ["encoder waits for legacy", "work", "legacy waits for encoder", "(2,) used on legacy"]


def test_a_borrowed_stream_that_is_current_or_none_adds_nothing(monkeypatch):
    log = []
    cuda, _ = install(monkeypatch, log)
    own = FakeStream(log, "encoder")
    with cuda.stream(own), borrowed_stream(own) as made:
        made.append(torch.zeros(1))
    with borrowed_stream(None) as made:
        made.append(torch.zeros(1))
    assert log == []


def test_wait_event_marks_the_tensors_used_by_the_waiting_stream(monkeypatch):
    log = []
    cuda, _ = install(monkeypatch, log)
    producer, consumer = FakeStream(log, "decode"), FakeStream(log, "encoder")
    event = cuda.Event()
    event.record(producer)
    wait_event(consumer, event, [torch.zeros(3)])
    wait_event(None, event, [torch.zeros(3)]), wait_event(consumer, None)
    assert log == ["decode records event1@decode", "encoder waits for event1@decode", "(3,) used on encoder"]
