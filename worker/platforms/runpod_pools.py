"""RunPod's GPU pools and CUDA versions, judged by the fit planner, for the Hub files.

RunPod places a serverless worker on any card of the pools an endpoint lists
(docs.runpod.io/references/gpu-types, "GPU pools") and on any host whose driver supports one
of its `allowedCudaVersions`. A worker landing where the model does not fit exits at start
and is restarted in a loop; one on a host whose driver is older than the image's CUDA cannot
start at all. So a pool is offered for a model only when the planner
(`worker.setup.plan.plan_engine`) accepts it on every card of the pool, and the CUDA
versions are the base image's and newer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from worker import VLLM_VERSION
from worker.setup.gpu import KNOWN_GPUS, GpuInfo, MiB, lookup_gpu

# What RunPod accepts in `allowedCudaVersions` (its API's enumeration), oldest first.
RUNPOD_CUDA_VERSIONS = ("11.8", "12.0", "12.1", "12.2", "12.3", "12.4", "12.5", "12.6", "12.7",
                        "12.8", "12.9", "13.0")
# The CUDA build of the base image `vllm/vllm-openai:v<VLLM_VERSION>`: vLLM's release images
# are CUDA 13.0 builds by default since 0.20 (cu129 is the suffixed variant). A new pin needs
# its entry here (hubgen refuses to guess).
IMAGE_CUDA = {"0.32.0": "13.0"}

# RunPod's serverless pools with the cards in them, as NVML reports them (nvidia-smi MiB).
# In priority order: the first pools listed are tried first. Pools of cards the planner has
# not been checked on (RTX 5090, RTX PRO 6000: compute capability 12.0; 16 GB cards) are left
# out.
POOLS: dict[str, tuple[GpuInfo, ...]] = {
    "ADA_80_PRO": (KNOWN_GPUS["H100"],),
    "AMPERE_80": (KNOWN_GPUS["A100-80GB"],),
    "HOPPER_141": (KNOWN_GPUS["H200"],),
    "BLACKWELL_180": (KNOWN_GPUS["B200"],),
    "ADA_48_PRO": (KNOWN_GPUS["L40S"], GpuInfo("NVIDIA L40", (8, 9), 46068 * MiB),
                   GpuInfo("NVIDIA RTX 6000 Ada Generation", (8, 9), 49140 * MiB)),
    "AMPERE_48": (GpuInfo("NVIDIA RTX A6000", (8, 6), 49140 * MiB),
                  GpuInfo("NVIDIA A40", (8, 6), 46068 * MiB)),
    "ADA_24": (KNOWN_GPUS["RTX4090"],),
    "AMPERE_24": (KNOWN_GPUS["L4"], KNOWN_GPUS["RTX3090"],
                  GpuInfo("NVIDIA RTX A5000", (8, 6), 24564 * MiB)),
}
POOL_GB = {"ADA_80_PRO": 80, "AMPERE_80": 80, "HOPPER_141": 141, "BLACKWELL_180": 180,
           "ADA_48_PRO": 48, "AMPERE_48": 48, "ADA_24": 24, "AMPERE_24": 24}


def allowed_cuda_versions(vllm_version: str = VLLM_VERSION) -> list[str]:
    """The base image's CUDA and every newer version RunPod knows, newest first."""
    image = IMAGE_CUDA.get(vllm_version)
    if image is None:
        raise ValueError(f"the CUDA build of vllm/vllm-openai:v{vllm_version} is not recorded: "
                         "add it to worker.platforms.runpod_pools.IMAGE_CUDA")
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("."))
    return sorted((v for v in RUNPOD_CUDA_VERSIONS if key(v) >= key(image)), key=key,
                  reverse=True)


def refusal(card: GpuInfo, env: Mapping[str, Any]) -> str | None:
    """Why the planner refuses the settings `env` (a preset) on `card`, or None if it plans."""
    from worker.setup.bootstrap import plan_request
    from worker.setup.config import Settings, SettingsError
    from worker.setup.models_catalog import DEFAULT_MODEL, known_model
    from worker.setup.plan import PlanError, plan_engine

    try:
        settings = Settings.from_env({k: str(v) for k, v in env.items()})
    except SettingsError as exc:
        return str(exc)
    model = settings.model or DEFAULT_MODEL
    shape = known_model(model)
    if shape is None:
        return f"MODEL={model} is not catalogued: a Hub preset must name a model it can size"
    try:
        plan_engine(card, shape, replace(plan_request(settings), model=model))
    except PlanError as exc:
        return exc.reason
    return None


def pool_refusal(pool: str, env: Mapping[str, Any]) -> str | None:
    """The first card of `pool` the planner refuses `env` on (and why), else None."""
    for card in POOLS[pool]:
        why = refusal(card, env)
        if why is not None:
            return f"{card.name}: {why}"
    return None


def fitting_pools(env: Mapping[str, Any]) -> list[str]:
    return [pool for pool in POOLS if pool_refusal(pool, env) is None]


def offered_pools(presets: Iterable[Mapping[str, Any]]) -> list[str]:
    """The pools every preset, and MODEL unset, fit (RunPod has one pool list for all)."""
    envs = [{}, *presets]
    pools = [p for p in POOLS if all(pool_refusal(p, env) is None for env in envs)]
    if not pools:
        raise ValueError("no RunPod pool fits every Hub preset: drop or change a preset")
    return pools


def preset_name(name: str, env: Mapping[str, Any]) -> str:
    pools = fitting_pools(env)
    if not pools:
        raise ValueError(f"Hub preset {name}: the planner refuses it on every RunPod pool")
    return f"{name} ({min(POOL_GB[p] for p in pools)} GB+ GPU)"


def check_hub(hub: Mapping[str, Any]) -> list[str]:
    """What in a hub.json would put a worker where it cannot start."""
    config = hub.get("config", {})
    problems = _check_cuda("hub.json", config)
    pools = [p.strip() for p in str(config.get("gpuIds", "")).split(",")
             if p.strip() and not p.strip().startswith("-")]
    presets = [("MODEL unset", {})] + [(str(p.get("name")), p.get("defaults", {}))
                                       for p in config.get("presets", [])]
    for pool in pools:
        if pool not in POOLS:
            problems.append(f"hub.json: gpuIds names {pool}, a pool the planner cannot judge "
                            f"(known: {', '.join(POOLS)})")
            continue
        for name, env in presets:
            why = pool_refusal(pool, env)
            if why is not None:
                problems.append(f"hub.json: preset {name!r} would be refused on {pool} ({why})")
    return problems


def check_tests(tests: Mapping[str, Any]) -> list[str]:
    """tests.json: the image's CUDA versions, and a test GPU its MODEL fits."""
    config = tests.get("config", {})
    problems = _check_cuda("tests.json", config)
    env = {e["key"]: e["value"] for e in config.get("env", []) if "key" in e}
    try:
        card = lookup_gpu(str(config.get("gpuTypeId", "")), int(config.get("gpuCount", 1)))
    except ValueError as exc:
        return [*problems, f"tests.json: gpuTypeId: {exc}"]
    why = refusal(card, env)
    if why is not None:
        problems.append(f"tests.json: the planner refuses its settings on "
                        f"{config.get('gpuTypeId')} ({why})")
    return problems


def _check_cuda(where: str, config: Mapping[str, Any]) -> list[str]:
    want = allowed_cuda_versions()
    got = config.get("allowedCudaVersions")
    if got != want:
        return [f"{where}: allowedCudaVersions is {got}, the base image "
                f"vllm/vllm-openai:v{VLLM_VERSION} needs {want}"]
    return []
