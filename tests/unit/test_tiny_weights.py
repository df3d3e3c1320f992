"""The random checkpoint at gpt-oss-20b's real size (worker.tiny.weights), for timing loads."""

from __future__ import annotations

import json
from pathlib import Path

from worker.setup.models_catalog import GPT_OSS_20B
from worker.tiny.mxfp4 import checkpoint_layout, mxfp4_config_dict
from worker.tiny.shapes import shape_config_dict
from worker.tiny.weights import (
    SCALE_LOW,
    SCALE_SPAN,
    build_random_weights,
    shard_plan,
    tensor_bytes,
)


def test_the_20b_layout_is_the_real_checkpoints_size() -> None:
    layout = checkpoint_layout(shape_config_dict("shape-20b"))
    total = sum(tensor_bytes(*v) for v in layout.values())
    # the catalogue's 13.03 GiB is what vLLM reported holding for the real checkpoint
    assert abs(total - GPT_OSS_20B.weight_bytes) / GPT_OSS_20B.weight_bytes < 0.03
    assert layout["model.layers.23.mlp.experts.gate_up_proj_blocks"] == (
        (32, 5760, 90, 16), "uint8")
    shards = shard_plan(layout)
    assert len(shards) == 3 and [n for s in shards for n in s] == list(layout)


def test_a_small_build_is_a_loadable_hub_style_checkpoint(tmp_path: Path) -> None:
    from safetensors import safe_open

    config = {**mxfp4_config_dict(), "vocab_size": 512, "num_hidden_layers": 2}
    layout = checkpoint_layout(config)
    total = build_random_weights(tmp_path, config, shard_bytes=8 * 1024**2)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == total == sum(
        tensor_bytes(*v) for v in layout.values())
    assert set(index["weight_map"]) == set(layout)
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00000-of-{len(files) - 1:05d}.safetensors"
    seen = set()
    for fname in files:
        with safe_open(str(tmp_path / fname), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118  (safe_open is not a mapping)
                t = f.get_tensor(name)
                shape, dtype = layout[name]
                assert tuple(t.shape) == shape and str(t.dtype) == f"torch.{dtype}"
                assert index["weight_map"][name] == fname
                if name.endswith("_scales"):
                    assert int(t.min()) >= SCALE_LOW and int(t.max()) < SCALE_LOW + SCALE_SPAN
                elif name.endswith("norm.weight"):
                    assert bool((t == 1).all())
                elif dtype == "bfloat16":
                    assert t.float().abs().max() < 1 and t.float().std() > 0
                seen.add(name)
    assert seen == set(layout)
    blocks = [n for n in layout if n.endswith("_blocks")]
    with safe_open(str(tmp_path / index["weight_map"][blocks[0]]), framework="pt") as f:
        a = f.get_tensor(blocks[0])
    with safe_open(str(tmp_path / index["weight_map"][blocks[1]]), framework="pt") as f:
        b = f.get_tensor(blocks[1])
    assert not (a.flatten()[:1000] == b.flatten()[:1000]).all()  # tensors do not repeat
