"""`python -m worker plan [--gpu NAME] [--count N] [--json]`: the plan, without loading anything.

Prints the hardware (probed, or a named card), the engine plan, the memory fit
and a verdict. Exit status 0 when it fits, 2 with the reason and a suggestion
when it cannot (or the configuration is invalid).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TextIO

from worker.setup.config import Settings, SettingsError
from worker.setup.fit import FitReport
from worker.setup.gpu import GiB, GpuInfo, lookup_gpu, probe
from worker.setup.models_catalog import DEFAULT_MODEL, ModelShape, known_model, shape_from_dir
from worker.setup.plan import (
    EnginePlan,
    PlanError,
    PlanRequest,
    choose_default_model,
    default_backend,
    engine_args,
    plan_engine,
)

EXIT_OK = 0
EXIT_REFUSED = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m worker plan",
                                description="Show the engine plan and memory fit; loads nothing.")
    p.add_argument("--gpu", help="plan for a named card instead of the detected one (H100, "
                   "H200, B200, A100-80GB, A100-40GB, L40S, L4, A10G, RTX4090, RTX3090)")
    p.add_argument("--count", type=int, help="number of identical cards (default: 1, or all "
                   "detected)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str], env: Mapping[str, str], out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    try:
        settings = Settings.from_env(env)
        gpu = _hardware(args.gpu, args.count, env)
    except (SettingsError, ValueError) as exc:
        return _refuse(out, args.json, "invalid configuration", str(exc), "", None)
    from worker.setup.bootstrap import plan_request

    req = plan_request(settings)
    model, why = _model(settings.model, gpu, req)
    try:
        shape = _shape(model, why, settings, env)
    except (SettingsError, ValueError) as exc:
        return _refuse(out, args.json, "refused", str(exc), "", None)
    report: dict[str, Any] = {"hardware": asdict(gpu) if gpu else None, "model": model,
                              "model_reason": why}
    if not args.json:
        _say(out, f"hardware: {gpu.describe() if gpu else 'no GPU: the CPU engine'}"
             + (" (named with --gpu)" if args.gpu else ""))
        _say(out, f"model:    {model}" + (f"  ({why})" if why else ""))
    if shape is None:
        backend = default_backend(gpu.architecture if gpu else "cpu")
        msg = (f"fit skipped: {model!r} is not a known gpt-oss id, not in the weight cache and "
               "not a local folder with a config.json; the worker reads its config.json from "
               f"the Hub at start (attention backend would be {backend})")
        if args.json:
            _say(out, json.dumps({**report, "ok": True, "plan": None, "skipped": msg}))
        else:
            _say(out, msg)
        return EXIT_OK
    try:
        plan = plan_engine(gpu, shape, replace(req, model=model))
    except PlanError as exc:
        if args.json:
            return _refuse(out, True, "", exc.reason, exc.suggestion, exc.fit, report)
        if exc.fit is not None:
            _print_fit(out, exc.fit, shape)
        verdict = "does not fit" if exc.fit is not None else "refused"
        return _refuse(out, False, verdict, exc.reason, exc.suggestion, None)
    if args.json:
        _say(out, json.dumps({**report, "ok": True, "plan": asdict(plan),
                              "engine_args": engine_args(plan), "env": plan.env}))
    else:
        _print_plan(out, plan, shape)
    return EXIT_OK


def _hardware(name: str | None, count: int | None, env: Mapping[str, str]) -> GpuInfo | None:
    if name:
        return lookup_gpu(name, count or 1)
    gpu = probe(env)
    if count is not None:
        if gpu is None:
            raise ValueError("--count needs a GPU: none was detected (name one with --gpu)")
        gpu = replace(gpu, count=count)
    return gpu


def _model(model: str | None, gpu: GpuInfo | None, req: PlanRequest) -> tuple[str, str]:
    auto = model is not None and model.lower() == "auto"
    if model and not auto:
        return model, ""
    if gpu is None:
        return "tiny-gpt-oss (random, CPU)", (f"MODEL {'auto' if auto else 'not set'} and no "
                                              "GPU: the worker serves a tiny random gpt-oss on "
                                              "the CPU engine")
    if not auto:
        return DEFAULT_MODEL, "MODEL not set: the default on every GPU; MODEL=auto picks per GPU"
    choice = choose_default_model(gpu, req)
    return choice.model, (f"MODEL=auto: {choice.reason}; workers on other GPUs may serve "
                          "another model")


def _shape(model: str, why: str, settings: Any, env: Mapping[str, str]) -> ModelShape | None:
    """Catalogued, local, or a Hub repo whose config.json is in the weight cache (no network)."""
    if model.startswith("tiny-gpt-oss") and why:
        return _tiny_shape()
    shape = known_model(model)
    if shape is None and (Path(model) / "config.json").is_file():
        shape = shape_from_dir(Path(model), name=model)
    if shape is None and "/" in model and not Path(model).is_absolute():
        from worker.setup.checkpoint import describe
        from worker.setup.weights import default_cache_dir

        shape = describe(model, revision=settings.model_revision, token=None, offline=True,
                         cache_dir=default_cache_dir(settings, env))
    return shape


def _tiny_shape() -> ModelShape:
    from worker.tiny import models as tiny

    return ModelShape(
        name="tiny-gpt-oss", num_layers=tiny.LAYERS, num_kv_heads=tiny.KV_HEADS,
        head_dim=tiny.HEAD_DIM, sliding_window=tiny.SLIDING_WINDOW,
        num_sliding_layers=tiny.LAYER_TYPES.count("sliding_attention"),
        max_position_embeddings=tiny.MAX_POSITION_EMBEDDINGS,
        weight_bytes=2 * tiny.VOCAB_SIZE * tiny.HIDDEN * 2,  # embedding + unembedding, bf16
        is_mxfp4=False, has_attention_sinks=True, vocab_size=tiny.VOCAB_SIZE,
        hidden_size=tiny.HIDDEN)


def _say(out: TextIO, text: str) -> None:
    print(text, file=out)


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def _print_plan(out: TextIO, plan: EnginePlan, shape: ModelShape) -> None:
    rows = [
        ("device", f"{plan.device} ({plan.architecture})"),
        ("attention backend", plan.attention_backend),
        ("MoE kernels", plan.moe_backend),
        ("KV cache dtype", plan.kv_cache_dtype),
        ("tensor parallel size", str(plan.tensor_parallel_size)),
        ("data parallel size", str(plan.data_parallel_size)),
        ("max_model_len", str(plan.max_model_len)),
        ("max_num_batched_tokens", str(plan.max_num_batched_tokens)),
        ("max_num_seqs", str(plan.max_num_seqs)),
    ]
    if plan.device == "cuda":
        rows.append(("gpu_memory_utilization", f"{plan.gpu_memory_utilization:g}"))
        kv = plan.kv_cache_memory_bytes
        rows.append(("KV cache memory", f"{_gib(kv)} per GPU (from the plan: vLLM's memory "
                     "profiling skipped)" if kv else "vLLM's profiling run measures it"))
        sizes = plan.cudagraph_capture_sizes
        rows.append(("CUDA graphs", f"{len(sizes)} batch sizes, {sizes[0]} to {sizes[-1]}"
                     if sizes else "vLLM's own batch sizes"))
    rows.append(("weight loader", plan.load_format))
    rows += [("env", " ".join(f"{k}={v}" for k, v in plan.env.items()) or "-")]
    if plan.layout:
        rows.insert(1, ("layout", plan.layout))
    _say(out, "plan:")
    for key, value in rows:
        _say(out, f"  {key:<24}{value}")
    _print_fit(out, plan.fit, shape, cpu=plan.device == "cpu")
    for w in plan.warnings:
        _say(out, f"warning: {w}")
    for n in plan.notes:
        _say(out, f"note:    {n}")
    _say(out, f"verdict: {plan.fit.verdict()}")


def _print_fit(out: TextIO, fit: FitReport, shape: ModelShape, cpu: bool = False) -> None:
    capped = " (the model's maximum)" if fit.max_context >= fit.native_max else ""
    rows = [("weights", _gib(fit.weights_bytes_per_gpu))]
    if not cpu:
        rows = [("usable memory", _gib(fit.usable_bytes)), *rows,
                ("runtime reserve", _gib(fit.reserve_bytes))]
    rows += [("KV cache budget", _gib(fit.kv_budget_bytes)),
            ("KV bytes per token", f"{fit.kv_bytes_per_token} ({shape.num_full_layers} "
             f"full-attention layers)"),
            ("sliding layers", f"{shape.num_sliding_layers} x window {shape.sliding_window}, "
             f"{fit.sliding_tokens_held} tokens held per sequence "
             f"({_gib(fit.sliding_seq_bytes(fit.sliding_tokens_held))})"
             if fit.sliding_tokens_held else "none"),
            ("largest context", f"{fit.max_context} tokens{capped}")]
    if fit.max_model_len and fit.max_model_len <= fit.max_context:
        rows.append(("full-length sequences", f"{fit.concurrent_seqs} at once "
                     f"(at {fit.max_model_len} tokens)"))
    _say(out, "fit (per GPU):" if not cpu else "fit (CPU, KV cache in RAM):")
    for key, value in rows:
        _say(out, f"  {key:<24}{value}")


def _refuse(out: TextIO, as_json: bool, verdict: str, reason: str, suggestion: str,
            fit: FitReport | None, report: dict[str, Any] | None = None) -> int:
    if as_json:
        body = {**(report or {}), "ok": False,
                "error": {"reason": reason, "suggestion": suggestion},
                "fit": asdict(fit) if fit else None}
        _say(out, json.dumps(body))
    else:
        _say(out, f"verdict: {verdict}")
        _say(out, f"reason:  {reason}")
        if suggestion:
            _say(out, f"suggest: {suggestion}")
    return EXIT_REFUSED
