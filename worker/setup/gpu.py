"""What GPU we run on: `GpuInfo`, a thin NVML probe, and cards one can plan for by name.

Everything here is pure except `probe()`, which imports `pynvml` (package
nvidia-ml-py) inside the function and reads only the environment mapping it is
given. Nothing happens at import.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

Architecture = Literal["ampere", "ada", "hopper", "blackwell", "older"]

MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True)
class GpuInfo:
    """One kind of card and how many identical ones are visible.

    `memory_bytes` is the total NVML reports for one card (what `nvidia-smi`
    shows), not what CUDA lets a process allocate; the planner subtracts the
    difference.
    """

    name: str
    compute_capability: tuple[int, int]
    memory_bytes: int
    count: int = 1
    free_bytes: int | None = None  # the least free on those cards at the probe; None: unknown

    @property
    def architecture(self) -> Architecture:
        return architecture(self.compute_capability)

    def describe(self) -> str:
        gib = self.memory_bytes / GiB
        cc = f"{self.compute_capability[0]}.{self.compute_capability[1]}"
        many = f"{self.count}× " if self.count > 1 else ""
        return f"{many}{self.name} ({gib:.1f} GiB, compute capability {cc}, {self.architecture})"


def architecture(cc: tuple[int, int]) -> Architecture:
    """Map a CUDA compute capability to the family that decides vLLM's kernels.

    8.0/8.6/8.7 Ampere, 8.9 Ada, 9.x Hopper, 10.x/12.x Blackwell; anything
    below 8.0 is "older" (gpt-oss needs bf16 and MXFP4 kernels from 8.0 on).
    """
    major, minor = cc
    if major >= 10:
        return "blackwell"
    if major == 9:
        return "hopper"
    if major == 8:
        return "ada" if minor >= 9 else "ampere"
    return "older"


# Per-card totals as NVML reports them (MiB, from nvidia-smi on the real cards).
KNOWN_GPUS: dict[str, GpuInfo] = {
    "A100-40GB": GpuInfo("NVIDIA A100-SXM4-40GB", (8, 0), 40960 * MiB),
    "A100-80GB": GpuInfo("NVIDIA A100-SXM4-80GB", (8, 0), 81920 * MiB),
    "A10G": GpuInfo("NVIDIA A10G", (8, 6), 23028 * MiB),
    "RTX3090": GpuInfo("NVIDIA GeForce RTX 3090", (8, 6), 24576 * MiB),
    "L4": GpuInfo("NVIDIA L4", (8, 9), 23034 * MiB),
    "L40S": GpuInfo("NVIDIA L40S", (8, 9), 46068 * MiB),
    "RTX4090": GpuInfo("NVIDIA GeForce RTX 4090", (8, 9), 24564 * MiB),
    "H100": GpuInfo("NVIDIA H100 80GB HBM3", (9, 0), 81559 * MiB),
    "H200": GpuInfo("NVIDIA H200", (9, 0), 143771 * MiB),
    "B200": GpuInfo("NVIDIA B200", (10, 0), 183359 * MiB),
}

# Normalised spelling (lower case, letters and digits only, vendor words dropped) -> key.
_ALIASES: dict[str, str] = {
    "a10040gb": "A100-40GB", "a10040g": "A100-40GB", "a10040": "A100-40GB",
    "a100sxm440gb": "A100-40GB", "a100pcie40gb": "A100-40GB",
    "a10080gb": "A100-80GB", "a10080g": "A100-80GB", "a10080": "A100-80GB", "a100": "A100-80GB",
    "a100sxm480gb": "A100-80GB", "a100pcie80gb": "A100-80GB",
    "a10g": "A10G", "a10": "A10G",
    "rtx3090": "RTX3090", "3090": "RTX3090",
    "l4": "L4",
    "l40s": "L40S", "l40": "L40S",
    "rtx4090": "RTX4090", "4090": "RTX4090",
    "h100": "H100", "h10080gb": "H100", "h10080gbhbm3": "H100", "h100sxm": "H100",
    "h100sxm5": "H100", "h100pcie": "H100",
    "h200": "H200", "h200141gb": "H200",
    "b200": "B200",
}


def _normalise(name: str) -> str:
    s = re.sub(r"[^a-z0-9]", "", name.lower())
    for word in ("nvidia", "geforce", "tesla"):
        s = s.removeprefix(word)
    return s


def known_key(name: str) -> str | None:
    """The KNOWN_GPUS key for a card name in any common spelling (NVML's too), else None."""
    return _ALIASES.get(_normalise(name))


def lookup_gpu(name: str, count: int = 1) -> GpuInfo:
    """A known card by a forgiving name ("h100", "A100-80G", "4090", "l40s"), `count` of them."""
    if count < 1:
        raise ValueError(f"GPU count must be at least 1, got {count}")
    key = known_key(name)
    if key is None:
        known = ", ".join(KNOWN_GPUS)
        raise ValueError(f"unknown GPU {name!r}: known cards are {known}")
    return replace(KNOWN_GPUS[key], count=count)


def visible_indices(cuda_visible_devices: str | None, device_count: int,
                    uuids: list[str] | None = None) -> list[int]:
    """NVML indices CUDA will use, following CUDA_VISIBLE_DEVICES' rules.

    Unset means all devices; an empty value means none; entries are indices
    or (prefixes of) UUIDs, and the list ends at the first invalid entry, as
    in CUDA itself. CUDA_DEVICE_ORDER is not taken into account: NVML order
    (PCI bus order) is assumed.
    """
    if cuda_visible_devices is None:
        return list(range(device_count))
    out: list[int] = []
    for raw in cuda_visible_devices.split(","):
        entry = raw.strip()
        idx: int | None = None
        if entry.isdigit():
            idx = int(entry)
        elif entry and uuids:
            matches = [i for i, u in enumerate(uuids) if u.startswith(entry)]
            idx = matches[0] if len(matches) == 1 else None
        if idx is None or idx >= device_count or idx in out:
            break
        out.append(idx)
    return out


def probe(env: Mapping[str, str]) -> GpuInfo | None:
    """The visible GPUs as one `GpuInfo`, or None without NVML, driver or device.

    `count` is the number of visible cards identical (same name and memory) to
    the first visible one; vLLM's tensor parallelism wants identical cards.
    """
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
        return None
    try:
        return _probe_devices(pynvml, env)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _probe_devices(nvml: Any, env: Mapping[str, str]) -> GpuInfo | None:
    total = int(nvml.nvmlDeviceGetCount())
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(total)]
    uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]
    indices = visible_indices(env.get("CUDA_VISIBLE_DEVICES"), total, uuids)
    if not indices:
        return None
    cards: list[tuple[str, tuple[int, int], int, int]] = []
    for i in indices:
        h = handles[i]
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(h)
        info = nvml.nvmlDeviceGetMemoryInfo(h)
        cards.append((_text(nvml.nvmlDeviceGetName(h)), (int(major), int(minor)),
                      int(info.total), int(info.free)))
    first = cards[0]
    same = [c for c in cards if c[0] == first[0] and c[2] == first[2]]
    return GpuInfo(name=first[0], compute_capability=first[1], memory_bytes=first[2],
                   count=len(same), free_bytes=min(c[3] for c in same))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
