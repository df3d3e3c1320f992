"""GpuInfo, known cards, architecture families and the NVML probe (faked: no GPU needed)."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from worker.setup.gpu import (
    KNOWN_GPUS,
    GpuInfo,
    MiB,
    architecture,
    known_key,
    lookup_gpu,
    probe,
    visible_indices,
)


@pytest.mark.parametrize(("spelling", "key"), [
    ("h100", "H100"), ("H100", "H100"), ("NVIDIA H100 80GB HBM3", "H100"),
    ("A100-80G", "A100-80GB"), ("a100", "A100-80GB"), ("A100-40GB", "A100-40GB"),
    ("4090", "RTX4090"), ("RTX 4090", "RTX4090"), ("l40s", "L40S"), ("L4", "L4"),
    ("a10g", "A10G"), ("h200", "H200"), ("B200", "B200"), ("rtx-3090", "RTX3090"),
])
def test_lookup_gpu_accepts_forgiving_names(spelling: str, key: str) -> None:
    gpu = lookup_gpu(spelling)
    assert gpu == KNOWN_GPUS[key]
    assert gpu.count == 1


def test_lookup_gpu_count_and_errors() -> None:
    two = lookup_gpu("l40s", 2)
    assert (two.count, two.memory_bytes, two.compute_capability) == (2, 46068 * MiB, (8, 9))
    with pytest.raises(ValueError, match=r"unknown GPU 'V100': known cards are A100-40GB.*H100"):
        lookup_gpu("V100")
    with pytest.raises(ValueError, match="at least 1"):
        lookup_gpu("h100", 0)


def test_known_cards_use_nvml_totals() -> None:
    assert KNOWN_GPUS["H100"].memory_bytes == 81559 * MiB  # nvidia-smi on the lent H100
    assert KNOWN_GPUS["H200"].memory_bytes == 143771 * MiB
    assert KNOWN_GPUS["A100-80GB"].compute_capability == (8, 0)
    assert KNOWN_GPUS["A10G"].compute_capability == (8, 6)
    assert KNOWN_GPUS["B200"].compute_capability == (10, 0)
    assert known_key("Tesla V100-SXM2-32GB") is None


@pytest.mark.parametrize(("cc", "family"), [
    ((8, 0), "ampere"), ((8, 6), "ampere"), ((8, 7), "ampere"), ((8, 9), "ada"),
    ((9, 0), "hopper"), ((10, 0), "blackwell"), ((12, 0), "blackwell"), ((7, 5), "older"),
    ((7, 0), "older"),
])
def test_architecture(cc: tuple[int, int], family: str) -> None:
    assert architecture(cc) == family


def test_describe() -> None:
    assert lookup_gpu("h100", 2).describe() == (
        "2× NVIDIA H100 80GB HBM3 (79.6 GiB, compute capability 9.0, hopper)")


def test_visible_indices_follow_cuda_rules() -> None:
    uuids = ["GPU-aaaa-1", "GPU-bbbb-2", "GPU-cccc-3"]
    assert visible_indices(None, 3, uuids) == [0, 1, 2]
    assert visible_indices("", 3, uuids) == []
    assert visible_indices("2,0", 3, uuids) == [2, 0]
    assert visible_indices("0,7,1", 3, uuids) == [0]  # stops at the first invalid entry
    assert visible_indices("GPU-bbbb", 3, uuids) == [1]
    assert visible_indices("-1", 3, uuids) == []
    assert visible_indices("1,1", 3, uuids) == [1]


class _Mem:
    def __init__(self, total: int, free: int):
        self.total, self.free = total, free


def _fake_nvml(devices: list[tuple[Any, ...]], *, init_error: bool = False,
               calls: list[str] | None = None) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    log = calls if calls is not None else []

    def init() -> None:
        log.append("init")
        if init_error:
            raise RuntimeError("NVML Shared Library Not Found")

    def fn(name: str, value: Any) -> None:
        setattr(mod, name, value)

    fn("nvmlInit", init)
    fn("nvmlShutdown", lambda: log.append("shutdown"))
    fn("nvmlDeviceGetCount", lambda: len(devices))
    fn("nvmlDeviceGetHandleByIndex", lambda i: i)
    fn("nvmlDeviceGetUUID", lambda h: f"GPU-{h}000")
    fn("nvmlDeviceGetName", lambda h: devices[h][0].encode())  # old pynvml returns bytes
    fn("nvmlDeviceGetCudaComputeCapability", lambda h: devices[h][1])
    # free: a fourth field, else all but the driver's 512 MiB
    fn("nvmlDeviceGetMemoryInfo", lambda h: _Mem(
        devices[h][2], devices[h][3] if len(devices[h]) > 3 else devices[h][2] - 512 * MiB))
    return mod


H100 = ("NVIDIA H100 80GB HBM3", (9, 0), 81559 * MiB)
L4 = ("NVIDIA L4", (8, 9), 23034 * MiB)


def test_probe_none_without_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert probe({}) is None


def test_probe_none_when_nvml_init_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([H100], init_error=True, calls=calls))
    assert probe({}) is None
    assert calls == ["init"]


def test_probe_counts_identical_visible_cards(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([H100, H100, L4, H100], calls=calls))
    assert probe({}) == GpuInfo("NVIDIA H100 80GB HBM3", (9, 0), 81559 * MiB, 3,
                                free_bytes=81047 * MiB)
    assert calls == ["init", "shutdown"]
    assert probe({"CUDA_VISIBLE_DEVICES": "2,0"}) == GpuInfo("NVIDIA L4", (8, 9),
                                                             23034 * MiB, 1, 22522 * MiB)
    assert probe({"CUDA_VISIBLE_DEVICES": "0,3"}).count == 2  # type: ignore[union-attr]


def test_probe_reports_the_least_free_memory_of_the_cards(monkeypatch: pytest.MonkeyPatch) -> None:
    busy = (*H100, 40000 * MiB)  # another process holds half of this one
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([H100, busy]))
    info = probe({})
    assert info is not None and info.count == 2 and info.free_bytes == 40000 * MiB
    assert probe({"CUDA_VISIBLE_DEVICES": ""}) is None


def test_probe_none_without_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([]))
    assert probe({}) is None
