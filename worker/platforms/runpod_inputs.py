"""RunPod's native job inputs (its vLLM request docs) -> OpenAI request bodies.

`{"messages": [...], "sampling_params": {...}}` becomes a chat request and
`{"prompt": "...", "sampling_params": {...}}` a text-completions request: each
`sampling_params` key (vLLM's `SamplingParams` names) is mapped onto the request
field the OpenAI route reads, so the bounds and checks are the same ones. A key
this worker does not know, or one it cannot honour for that shape, fails the job
naming `sampling_params.<key>`; nothing is dropped. `renames` maps the request's
fields back to the job's keys, so an error found later (a budget, a stop string)
names the key the client sent.

Pure functions over dicts: no platform import, unit-tested without a worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.openai.errors import InvalidRequest, WorkerError
from worker.platforms.runpod_stream import KNOBS

# Keys of a native job that are the job's, not the request's.
JOB_KEYS = ("sampling_params", "apply_chat_template", "use_openai_format", *KNOBS)
# Sampling keys both request shapes take under the same name.
SAME_NAME = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "n",
             "presence_penalty", "frequency_penalty", "repetition_penalty", "min_tokens",
             "logit_bias")
# Keys a text completion reads itself (worker.openai.completions.protocol).
TEXT_ONLY = ("logprobs", "ignore_eos", "skip_special_tokens", "stop_token_ids", "best_of")
# vLLM keys served by neither shape; a value that changes nothing (listed) is accepted.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "detokenize": (True,), "use_beam_search": (False,), "length_penalty": (1, 1.0),
    "early_stopping": (False,), "include_stop_str_in_output": (False,),
    "spaces_between_special_tokens": (True, False), "prompt_logprobs": (),
    "truncate_prompt_tokens": (), "allowed_token_ids": (), "bad_words": (),
    "logits_processors": (), "structured_outputs": (), "guided_decoding": (),
    "output_kind": (), "extra_args": (),
}
WHY = {
    "detokenize": "the output is always text here",
    "use_beam_search": "beam search is not served by this worker",
    "length_penalty": "beam search is not served by this worker",
    "early_stopping": "beam search is not served by this worker",
    "include_stop_str_in_output": "the stop string is never part of the output here",
    "prompt_logprobs": "prompt logprobs are not served by this worker",
    "truncate_prompt_tokens": "prompts are never truncated here; shorten the prompt",
    "allowed_token_ids": "not served by this worker; use logit_bias",
    "bad_words": "not served by this worker; use logit_bias",
    "logits_processors": "custom logits processors are not served by this worker",
    "structured_outputs": "send an OpenAI chat request with response_format instead",
    "guided_decoding": "send an OpenAI chat request with response_format instead",
    "output_kind": "the stream's shape is set by `stream`",
    "extra_args": "not served by this worker",
}


@dataclass(frozen=True)
class Mapped:
    body: dict[str, Any]  # the OpenAI request body
    renames: dict[str, str] = field(default_factory=dict)  # request field -> job key


def _openai_format_only(job_input: Mapping[str, Any], kind: str) -> None:
    """worker-vllm's `use_openai_format: false` (its own output shape) is refused by name."""
    if job_input.get("use_openai_format") is False:
        raise InvalidRequest(f"this worker's output is always OpenAI's shape (a {kind} "
                             "completion, or its chunks when streamed): leave "
                             "use_openai_format out or set it true", param="use_openai_format")


def chat_body(job_input: Mapping[str, Any]) -> Mapped:
    """A native chat job (`messages`) as a chat-completions body."""
    body, params = _split(job_input)
    _openai_format_only(job_input, "chat")
    renames: dict[str, str] = {}
    for key, value in params.items():
        where = f"sampling_params.{key}"
        if key in SAME_NAME:
            _put(body, key, value, where, renames)
        elif key == "logprobs":
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise InvalidRequest("logprobs must be an integer: the number of top "
                                         "alternatives per token", param=where)
                _put(body, "logprobs", True, where, renames)
                _put(body, "top_logprobs", value, where, renames)
        elif key == "ignore_eos":
            if value is True:  # generate exactly max_tokens: no end of turn before it
                cap = params.get("max_tokens", body.get("max_tokens"))
                if cap is None:
                    raise InvalidRequest("ignore_eos needs max_tokens: it generates exactly "
                                         "that many tokens", param=where)
                _put(body, "min_tokens", cap, where, renames, replace=True)
            elif value not in (None, False):
                raise InvalidRequest("ignore_eos must be true or false", param=where)
        elif key == "skip_special_tokens":
            if value is False:
                raise InvalidRequest(
                    "a chat answer is parsed from the Harmony format and never holds special "
                    "tokens; send a `prompt` job for the raw text", param=where)
        elif key == "best_of":
            _best_of(value, params.get("n", body.get("n")), where)
        elif key == "stop_token_ids":
            if value:
                raise InvalidRequest("a chat turn ends on the Harmony stop tokens; send a "
                                     "`prompt` job to stop on other tokens", param=where)
        else:
            _other(key, value)
    return Mapped(body, renames)


def completion_body(job_input: Mapping[str, Any]) -> Mapped:
    """A native prompt job (`prompt`) as a text-completions body (no chat template)."""
    body, params = _split(job_input)
    if job_input.get("apply_chat_template"):
        raise InvalidRequest("a prompt is completed as raw text; for the chat template send "
                             "`messages` instead of `prompt`", param="apply_chat_template")
    _openai_format_only(job_input, "text")
    renames: dict[str, str] = {}
    for key, value in params.items():
        if key in SAME_NAME or key in TEXT_ONLY:
            _put(body, key, value, f"sampling_params.{key}", renames)
        else:
            _other(key, value)
    return Mapped(body, renames)


def rename(exc: BaseException, renames: Mapping[str, str]) -> BaseException:
    """`exc` with its `param` naming the job's key (`sampling_params.x`) when it came
    from one."""
    if isinstance(exc, WorkerError) and exc.param:
        for fld, key in renames.items():
            if exc.param == fld or exc.param.startswith((fld + ".", fld + "[")):
                exc.param = key + exc.param[len(fld):]
                break
    return exc


def _split(job_input: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    params = job_input.get("sampling_params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidRequest("sampling_params must be an object of vLLM sampling parameters",
                             param="sampling_params")
    body = {k: v for k, v in job_input.items() if k not in JOB_KEYS}
    return body, params


def _put(body: dict[str, Any], key: str, value: Any, where: str, renames: dict[str, str],
         *, replace: bool = False) -> None:
    if key in body and not replace:
        raise InvalidRequest(f"{key} is set both in the job input and in sampling_params; "
                             "set it once", param=where)
    body[key] = value
    renames[key] = where


def _best_of(value: Any, n: Any, where: str) -> None:
    if value is not None and value != (n or 1):
        raise InvalidRequest("best_of is not served: this worker returns every choice it "
                             "generates, so best_of must equal n or be left out", param=where)


def _other(key: str, value: Any) -> None:
    where = f"sampling_params.{key}"
    if key not in NEUTRAL:
        known = sorted({*SAME_NAME, *TEXT_ONLY, *NEUTRAL})
        raise InvalidRequest(f"{where} is not a sampling parameter this worker knows; "
                             f"known: {', '.join(known)}", param=where)
    if value is not None and not any(
            value == v and isinstance(value, bool) == isinstance(v, bool) for v in NEUTRAL[key]):
        raise InvalidRequest(f"{where}: {WHY[key]}", param=where)
