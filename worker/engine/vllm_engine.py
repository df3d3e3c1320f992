"""The only module that imports vLLM.

Builds one in-process `AsyncLLM` from an `EngineConfig` and adapts it to the
small `Engine` interface in `engine_api.py`. It uses only vLLM's stable public
API (`AsyncEngineArgs`, `AsyncLLM`, `SamplingParams`, `TokensPrompt`), which
vLLM 0.26 (the GPU test machines) and 0.32 (the image and CI) share.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from worker.engine.api import (
    EngineDeadError,
    EngineInfo,
    GenerationDelta,
    RequestRejected,
    SamplingOptions,
    StartupMonitor,
)
from worker.engine.engine_config import (  # noqa: F401  (re-exported: the drift test, setup)
    CUDAGRAPH_SIZES_KEY,
    ENGINE_ARG_NAMES,
    LOAD_FORMATS,
    EngineConfig,
)
from worker.engine.extra_args import check_known
from worker.engine.grammar_check import GrammarChecker, adopt, grammar_checker_for, prestarted
from worker.engine.outputs import finish_reason_of, logprobs_of
from worker.engine.reseed import reseed_worker
from worker.engine.sampling import sampling_kwargs, structured_kwargs

log = logging.getLogger(__name__)

def check_config(config: EngineConfig) -> None:
    """Before anything loads: every passed-through argument exists in the installed vLLM
    and none conflicts with ours (EngineArgsError names it)."""
    if not config.extra_args:
        return
    import vllm

    check_known(config.extra_args, config.extra_sources, engine_arg_fields(), vllm.__version__)
    config.vllm_args()


def engine_arg_fields() -> frozenset[str]:
    """The installed vLLM's engine-argument names (`AsyncEngineArgs` fields)."""
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    return frozenset(f.name for f in dataclasses.fields(AsyncEngineArgs))


def import_vllm(config: EngineConfig) -> None:
    """Set the plan's environment, then import what the engine uses (once per process)."""
    for key, value in config.env.items():
        os.environ.setdefault(key, value)
    import vllm.engine.arg_utils
    import vllm.v1.engine.async_llm  # noqa: F401  (torch, vLLM's config, its engine)


def prefetch(config: EngineConfig) -> threading.Thread:
    """`import_vllm` in a thread, so a weight download (I/O) and vLLM's import (~20 s on a
    GPU host) overlap; join it before `build`, whose own import reports any failure."""
    def run() -> None:
        try:
            import_vllm(config)
        except BaseException as exc:  # the build imports again and reports it
            log.debug("background import of vLLM failed: %s", exc)

    thread = threading.Thread(target=run, name="vllm-import", daemon=True)
    thread.start()
    return thread


class VllmEngine:
    """`Engine` on an in-process vLLM `AsyncLLM`."""

    def __init__(self, llm: Any, info: EngineInfo, modules: dict[str, Any],
                 grammar: GrammarChecker | None = None):
        self._llm = llm
        self._info = info
        self._m = modules
        self._dead = False
        self._grammar = grammar

    # -- construction -------------------------------------------------------
    @classmethod
    async def build(cls, config: EngineConfig, *, phases: dict[str, float] | None = None,
                    monitor: StartupMonitor | None = None) -> VllmEngine:
        """Build, then warm up. `phases` (a Timeline's dict) receives vllm_import, the
        engine build split by `monitor` (weight_load, compile, graph_capture,
        engine_init_other) and warmup seconds; `monitor` watches the build as it happens."""
        phases = phases if phases is not None else {}
        t0 = time.perf_counter()
        import_vllm(config)  # at once when `prefetch` already imported it
        import vllm
        from vllm import SamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        from vllm.v1.engine.async_llm import AsyncLLM

        log.info("imported vLLM %s in %.1fs", vllm.__version__, time.perf_counter() - t0)
        phases["vllm_import"] = round(phases.get("vllm_import", 0.0) + time.perf_counter() - t0, 3)
        args = AsyncEngineArgs(**config.vllm_args())
        early = await prestarted(config)  # the schema checker loads while the engine builds
        t1 = time.perf_counter()
        try:
            with monitor.watching() if monitor else contextlib.nullcontext():
                llm = AsyncLLM.from_engine_args(args)
        except BaseException:
            adopt(early, None)
            raise
        built = time.perf_counter() - t1
        phases.update(monitor.split(built) if monitor else {"engine_init_other": round(built, 3)})
        vcfg = llm.vllm_config
        engines = int(vcfg.parallel_config.data_parallel_size)
        info = EngineInfo(
            model=config.model,
            served_model_names=config.served_model_names,
            max_model_len=int(vcfg.model_config.max_model_len),
            # each data-parallel engine runs max_num_seqs sequences of its own
            max_num_seqs=int(vcfg.scheduler_config.max_num_seqs) * engines,
            device=config.device,
            details={
                "vllm_version": vllm.__version__,
                "attention_backend": str(config.engine_args.get("attention_backend") or "auto"),
                "kv_cache_dtype": str(vcfg.cache_config.cache_dtype),
                "load_format": config.load_format,
                "tensor_parallel_size": int(vcfg.parallel_config.tensor_parallel_size),
                "data_parallel_size": engines,
                "build_seconds": round(time.perf_counter() - t1, 2),
            },
        )
        modules = {
            "SamplingParams": SamplingParams,
            "TokensPrompt": TokensPrompt,
            "StructuredOutputsParams": StructuredOutputsParams,
            "DELTA": RequestOutputKind.DELTA,
        }
        engine = cls(llm, info, modules, grammar=adopt(early, grammar_checker_for(config, vcfg)))
        log.info("engine ready: %s", {**info.details, "max_model_len": info.max_model_len})
        if config.warmup:
            t2 = time.perf_counter()
            await engine.warmup()
            phases["warmup"] = round(time.perf_counter() - t2, 3)
        if engine._grammar is not None:
            engine._grammar.start_soon()
        return engine

    async def warmup(self) -> None:
        """One short request so the first real request pays no lazy initialisation."""
        t0 = time.perf_counter()
        opts = SamplingOptions(max_tokens=2, temperature=0.0)
        async for _ in self.generate(f"warmup-{uuid.uuid4().hex}", [200006, 1428], opts):
            pass
        log.info("warm-up request done in %.2fs", time.perf_counter() - t0)

    # -- Engine interface -----------------------------------------------------
    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def is_dead(self) -> bool:
        if self._dead:
            return True
        try:
            return bool(self._llm.errored)
        except Exception:
            return True

    def _sampling_params(self, o: SamplingOptions) -> Any:
        kw = structured_kwargs(o)
        structured = self._m["StructuredOutputsParams"](**kw) if kw is not None else None
        return self._m["SamplingParams"](**sampling_kwargs(o), structured_outputs=structured,
                                         output_kind=self._m["DELTA"])

    async def generate(
        self, request_id: str, prompt_token_ids: Sequence[int], options: SamplingOptions
    ) -> AsyncGenerator[GenerationDelta, None]:
        if self.is_dead:
            raise EngineDeadError("the engine is dead")
        params = self._sampling_params(options)
        prompt = self._m["TokensPrompt"](prompt_token_ids=list(prompt_token_ids))
        finished = False
        stream = self._llm.generate(prompt, params, request_id, priority=options.priority)
        try:
            async for out in stream:
                comp = out.outputs[0]
                finished = bool(out.finished)
                yield GenerationDelta(
                    token_ids=tuple(comp.token_ids),
                    num_prompt_tokens=len(out.prompt_token_ids or ()),
                    finished=finished,
                    finish_reason=finish_reason_of(comp.finish_reason) if finished else None,
                    logprobs=(None if options.logprobs is None
                              else logprobs_of(comp, options.logprobs)),
                )
        except EngineDeadError:
            self._dead = True
            raise
        except Exception as exc:
            if self._is_engine_dead(exc):
                self._dead = True
                raise EngineDeadError(f"the engine died: {type(exc).__name__}") from exc
            if isinstance(exc, ValueError | TypeError) and not finished:
                # vLLM validates a request when it is added (e.g. a JSON schema it cannot
                # compile): that is the client's error, not the server's.
                structured = bool(options.json_schema or options.json_object)
                raise RequestRejected(f"the engine rejected the request: {str(exc)[:300]}",
                                      structured=structured) from exc
            raise
        finally:
            if not finished:
                await stream.aclose()
                await self.abort(request_id)

    def _is_engine_dead(self, exc: BaseException) -> bool:
        return type(exc).__name__ == "EngineDeadError" or self.is_dead

    async def abort(self, request_id: str) -> None:
        if self.is_dead:
            return
        try:
            await self._llm.abort(request_id)
        except Exception:  # aborting an unknown or finished request is not an error
            log.debug("abort of %s failed", request_id, exc_info=True)
        else:
            log.info("engine request %s aborted", request_id)

    async def num_unfinished(self) -> int:
        return int(self._llm.output_processor.get_num_unfinished_requests())

    async def check_health(self) -> None:
        if self.is_dead:
            raise EngineDeadError("the engine is dead")
        try:
            await self._llm.check_health()
        except Exception as exc:
            self._dead = True
            raise EngineDeadError(f"engine health check failed: {type(exc).__name__}") from exc

    async def check_schema(self, schema: str, *, time_limit: float) -> None:
        if self._grammar is not None:
            await self._grammar.check(schema, time_limit=time_limit)

    async def sleep(self, level: int = 1) -> None:
        """Free GPU memory (vLLM sleep mode) before a memory snapshot."""
        await self._llm.reset_prefix_cache()
        await self._llm.sleep(level)

    async def wake_up(self) -> None:
        await self._llm.wake_up()

    async def reseed(self, seed: int) -> None:
        """New random state in the engine-core process (its sampler's generators), e.g. after
        a snapshot restore. The function goes by reference (cloudpickle), not as code."""
        import cloudpickle

        await self._llm.collective_rpc(cloudpickle.dumps(reseed_worker), args=(seed,))

    async def shutdown(self) -> None:
        if self._grammar is not None:
            await self._grammar.aclose()
        llm, self._llm, self._dead = self._llm, None, True
        if llm is None:
            return
        try:
            llm.shutdown()
        except Exception:
            log.warning("engine shutdown raised", exc_info=True)
        # AsyncLLM.__del__ calls shutdown() again, at interpreter exit when vLLM's module
        # globals are already gone (a TypeError printed on every clean exit): done is done.
        llm.shutdown = _noop
        del llm
        gc.collect()


def _noop(*args: Any, **kwargs: Any) -> None:
    return None
