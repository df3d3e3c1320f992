"""A random gpt-oss-20b checkpoint at its real size, to measure weight loading.

`python -m worker.tiny --kind weights-20b --cache DIR` writes what `shape-20b` writes (the
public config.json, generation_config.json, the offline tokenizer) plus random weights in the
real checkpoint's format and size: MXFP4 experts, bf16 elsewhere (the layout of
`worker.tiny.mxfp4.checkpoint_layout` at the 20b shape), ~13 GiB over three
`model-0000N-of-00002.safetensors` shards with `model.safetensors.index.json`, as on the hub.

The values are filled from small random pools, not drawn one by one: writing 13 GiB must take
seconds, and a loader reads bytes whatever they hold. Scales stay near 2**-7 so a forward pass
on these weights is finite, but the output is noise: this checkpoint is for timing the load
(`bench/load_bench.py`), nothing else. Each shard is fsynced, so a later read measures the
disk once its pages are evicted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.tiny.mxfp4 import checkpoint_layout

if TYPE_CHECKING:
    import torch

SHARD_BYTES = 5 * 1024**3  # the hub's gpt-oss-20b shards are about this size
POOL_BYTES = 64 * 1024**2
SCALE_LOW, SCALE_SPAN = 118, 4  # e8m0 scale bytes 118..121: 2**-9 .. 2**-6
NOISE_STD = 0.02


def tensor_bytes(shape: tuple[int, ...], dtype: str) -> int:
    n = 1
    for d in shape:
        n *= d
    return n * (2 if dtype == "bfloat16" else 1)


def shard_plan(layout: dict[str, tuple[tuple[int, ...], str]],
               shard_bytes: int = SHARD_BYTES) -> list[list[str]]:
    """Tensor names in layout order, cut into shards of at most `shard_bytes` (a larger
    tensor gets a shard of its own)."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, (shape, dtype) in layout.items():
        size = tensor_bytes(shape, dtype)
        if shards[-1] and used + size > shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


class _Pools:
    """Random bytes and bf16 values, reused at shifting offsets to fill tensors fast."""

    def __init__(self, seed: int) -> None:
        import torch

        gen = torch.Generator().manual_seed(seed)
        self.u8 = torch.randint(0, 256, (POOL_BYTES,), generator=gen, dtype=torch.uint8)
        self.scale = (self.u8 % SCALE_SPAN + SCALE_LOW).to(torch.uint8)
        self.bf16 = (torch.randn(POOL_BYTES // 2, generator=gen) * NOISE_STD).bfloat16()
        self.offset = 0

    def fill(self, name: str, shape: tuple[int, ...], dtype: str) -> torch.Tensor:
        import torch

        if name.endswith("norm.weight"):
            return torch.ones(shape, dtype=torch.bfloat16)
        pool = (self.bf16 if dtype == "bfloat16"
                else self.scale if name.endswith("_scales") else self.u8)
        n = 1
        for d in shape:
            n *= d
        out = torch.empty(n, dtype=pool.dtype)
        done = 0
        while done < n:
            start = self.offset % pool.numel()
            take = min(n - done, pool.numel() - start)
            out[done:done + take] = pool[start:start + take]
            done += take
            self.offset += 7919 + take  # a prime step: no two tensors start alike
        return out.reshape(shape)


def build_random_weights(dest: Path, config: dict[str, Any], seed: int = 0,
                         shard_bytes: int = SHARD_BYTES) -> int:
    """Write random MXFP4 weights for `config` into `dest` as hub-style shards and index;
    return the bytes of tensor data written."""
    from safetensors.torch import save_file

    layout = checkpoint_layout(config)
    shards = shard_plan(layout, shard_bytes)
    pools = _Pools(seed)
    last = len(shards) - 1
    weight_map: dict[str, str] = {}
    total = 0
    for i, names in enumerate(shards):
        fname = f"model-{i:05d}-of-{last:05d}.safetensors"
        tensors = {n: pools.fill(n, *layout[n]) for n in names}
        path = dest / fname
        save_file(tensors, str(path), metadata={"format": "pt"})
        with path.open("rb") as f:
            os.fsync(f.fileno())
        total += sum(tensor_bytes(*layout[n]) for n in names)
        weight_map.update(dict.fromkeys(names, fname))
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return total


def build_weights_model(dest: Path, kind: str) -> None:
    """`weights-20b`: the `shape-20b` folder plus random weights at its real size."""
    from worker.tiny.shapes import build_shape_model, shape_config_dict

    shape = kind.replace("weights-", "shape-")
    build_shape_model(dest, shape)
    build_random_weights(dest, shape_config_dict(shape))
    (dest / "README.md").write_text(
        f"# gpt-oss {shape.removeprefix('shape-')}, random weights at the real size\n\n"
        "For timing weight loading only: the output is noise.\n")
