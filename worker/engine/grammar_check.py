"""JSON-schema compile checks for the vLLM engine, in a child process with a time limit.

vLLM compiles a request's JSON schema in its engine core, with the tokenizer,
after the request was accepted: a schema that compiles for a long time (a string
of `maxLength: 1000000` takes 17 s on two CPU cores) holds its request and the
engine's CPU that long. `GrammarChecker` compiles each schema first, the way the
engine's xgrammar backend will (same tokenizer, same whitespace rule), in a child
process that is killed when it runs past its time; the event loop only waits on a
pipe, so other requests go on. Verdicts are cached: a schema compiles here once.

Part of the vLLM engine (only `worker.engine.vllm_engine` uses it). It imports
xgrammar, the grammar library vLLM pins, never vLLM, so the child starts in
seconds. The child is `python -m worker.engine.grammar_check`: a plain process,
not a multiprocessing one that would re-run the parent's main module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from worker.engine.api import RequestRejected

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0  # loading the tokenizer in the child, once
CACHE_SIZE = 512


@dataclass(frozen=True)
class GrammarSpec:
    """What the child needs to compile as the engine does."""

    tokenizer: str
    revision: str | None
    cache_dir: str | None
    vocab_size: int
    any_whitespace: bool = False  # the engine runs xgrammar with disable_any_whitespace


class GrammarChecker:
    """One child compiling one schema at a time; a verdict per schema text, cached."""

    def __init__(self, spec: GrammarSpec):
        self._spec = spec
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._cache: OrderedDict[str, str | None] = OrderedDict()  # schema -> error or None
        self._unavailable = False
        self._warming: asyncio.Future[None] | None = None
        self._starting = False  # spawned by prestart, ready line not read yet

    @property
    def spec(self) -> GrammarSpec:
        return self._spec

    def start_soon(self) -> None:
        """Start the child in the background, so the first schema does not wait for it."""
        async def warm() -> None:
            async with self._lock:
                await self._child()

        self._warming = asyncio.ensure_future(warm())

    async def check(self, schema: str, *, time_limit: float) -> None:
        """Raise RequestRejected (structured) unless `schema` compiles within `time_limit`."""
        if schema not in self._cache:
            async with self._lock:  # one compile at a time; the others wait their turn
                if schema not in self._cache:
                    await self._compile(schema, time_limit)
        verdict = self._cache.get(schema)
        if verdict is not None:
            raise RequestRejected(verdict, structured=True)

    async def _compile(self, schema: str, time_limit: float) -> None:
        proc = await self._child()
        if proc is None:  # no checker here: the engine's own checks still apply
            return
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(schema).encode() + b"\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), time_limit)
        except TimeoutError:
            log.warning("a JSON schema did not compile in %.1f s; restarting the checker",
                        time_limit)
            await self.aclose()
            # not cached: a busier moment may have been the cause
            raise RequestRejected(
                f"the schema did not compile within {time_limit:g} s; simplify it (smaller "
                "maxLength, maxItems, enums or pattern repetitions)", structured=True) from None
        except BaseException:  # cancelled, or the child went away: start afresh next time
            self.close()
            raise
        if not line:
            self.close()
            raise RequestRejected("the schema could not be compiled (the compiler exited)",
                                  structured=True)
        reply = json.loads(line)
        self._remember(schema, reply.get("error"))

    async def prestart(self) -> None:
        """Spawn the child now, so it loads its tokenizer while the engine builds (another
        process: the build blocks this one); its ready line is read at first use."""
        async with self._lock:
            if self._proc is None and not self._unavailable:
                self._proc = await self._spawn()
                self._starting = True

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.engine.grammar_check", json.dumps(asdict(self._spec)),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=_child_env())

    async def _child(self) -> asyncio.subprocess.Process | None:
        if self._proc is not None and self._proc.returncode is None and not self._starting:
            return self._proc
        if self._unavailable:
            return None
        if self._proc is None or self._proc.returncode is not None:
            self.close()
            self._proc = await self._spawn()
        proc = self._proc
        self._starting = False
        assert proc.stdout is not None
        try:
            ready = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
            status = json.loads(ready) if ready else {"error": "it exited"}
        except TimeoutError:
            status = {"error": f"not ready in {START_TIMEOUT_S:g} s"}
        except BaseException:
            self.close()
            raise
        if "ready" not in status:
            log.warning("JSON schemas are not compiled ahead (the checker failed: %s); the "
                        "engine still rejects the ones it cannot compile", status.get("error"))
            self._unavailable = True
            self.close()
            return None
        return proc

    def _remember(self, schema: str, verdict: str | None) -> None:
        self._cache[schema] = verdict
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def aclose(self) -> None:
        """Kill the child and reap it."""
        proc = self._proc
        self.close()
        if proc is not None:
            await proc.wait()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        self._starting = False
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"  # the engine has the tokenizer already: never download
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _first_line(text: str) -> str:
    """xgrammar's message without its time stamp and C++ source location."""
    line = text.strip().splitlines()[0] if text.strip() else "invalid schema"
    if line.startswith("[") and "] " in line:
        line = line.split("] ", 1)[1]
    if ".cc:" in line and ": " in line:
        line = line.split(": ", 1)[1]
    return line[:300]


def _serve(spec: GrammarSpec, out: Any) -> None:
    """The child: load the tokenizer once, then answer one line per schema line."""
    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    try:
        import xgrammar as xgr
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer, revision=spec.revision,
                                                  cache_dir=spec.cache_dir)
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=spec.vocab_size)
        compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
    except Exception as exc:
        reply({"error": f"{type(exc).__name__}: {exc}"[:300]})
        return
    reply({"ready": True})
    separators = None if spec.any_whitespace else (",", ":")
    for line in sys.stdin:
        try:
            compiler.compile_json_schema(json.loads(line), any_whitespace=spec.any_whitespace,
                                         separators=separators)
            reply({"error": None})
        except Exception as exc:
            reply({"error": _first_line(str(exc))})


if __name__ == "__main__":
    _out = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not reach the reply pipe
    _serve(GrammarSpec(**json.loads(sys.argv[1])), _out)


def grammar_checker_for(config: Any, vcfg: Any) -> GrammarChecker | None:
    """A checker compiling schemas the way the vLLM engine's xgrammar backend does (None when
    structured outputs use another backend): `config` its EngineConfig, `vcfg` vLLM's config."""
    so = vcfg.structured_outputs_config
    if not str(so.backend).startswith("xgrammar"):
        return None
    return GrammarChecker(_spec(config, int(vcfg.model_config.get_vocab_size()),
                                not so.disable_any_whitespace))


def early_checker(config: Any) -> GrammarChecker | None:
    """The same checker before vLLM's config exists (its vocabulary size from the local
    checkpoint's config.json), or None where that cannot be known."""
    so = config.engine_args.get("structured_outputs_config") or {}
    if not str(so.get("backend", "")).startswith("xgrammar"):
        return None
    try:
        text = (Path(str(config.engine_args["model"])) / "config.json").read_text()
        vocab = int(json.loads(text)["vocab_size"])
    except (KeyError, OSError, TypeError, ValueError):
        return None
    return GrammarChecker(_spec(config, vocab, not so.get("disable_any_whitespace", False)))


def _spec(config: Any, vocab_size: int, any_whitespace: bool) -> GrammarSpec:
    args = config.engine_args
    return GrammarSpec(
        tokenizer=str(args.get("tokenizer") or config.model), revision=args.get("revision"),
        cache_dir=args.get("download_dir"), vocab_size=vocab_size, any_whitespace=any_whitespace)


async def prestarted(config: Any) -> GrammarChecker | None:
    """`early_checker(config)` with its child already spawned (None where there is none)."""
    early = early_checker(config)
    if early is not None:
        await early.prestart()
    return early


def adopt(early: GrammarChecker | None, proper: GrammarChecker | None) -> GrammarChecker | None:
    """The prestarted checker where it is the one the engine needs, else `proper` (the early
    one is then stopped)."""
    if early is not None and proper is not None and early.spec == proper.spec:
        return early
    if early is not None:
        early.close()
    return proper
