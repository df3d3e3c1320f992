"""The text-completions request (`/v1/completions`, a RunPod `prompt` job) in pydantic.

A raw text completion: the prompt goes to the model as written, with no chat
template (special tokens written in a prompt string are read as special tokens,
as vLLM's tokenizer does); the answer is the generated text. For gpt-oss, chat
(`/v1/chat/completions`) is the right shape: the model was trained on Harmony
conversations, which only chat and responses render for it.

Like chat: unknown fields are ignored, known ones are validated strictly and
named when wrong. Fields OpenAI or vLLM define that this worker cannot honour
are accepted by the model and refused by name in `validate_request` (`suffix`,
`best_of` above `n`, prompt logprobs and `echo` with `logprobs`, structured
output, `include_stop_str_in_output`...).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from worker.harmony.tokens import VOCAB_SIZE
from worker.openai.bounds import Seed, TopK, check_logit_bias, parse_body
from worker.openai.chat.messages import RequestModel
from worker.openai.chat.protocol import StreamOptions
from worker.openai.errors import InvalidRequest

TokenId = Annotated[int, Field(ge=0, lt=VOCAB_SIZE)]
MAX_LOGPROBS = 20
MAX_STOP_TOKEN_IDS = 64


Prompt = str | list[TokenId] | list[str] | list[list[TokenId]]


class CompletionRequest(RequestModel):
    model: str | None = None
    prompt: Prompt
    echo: bool | None = False
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1)] | None = 1
    best_of: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    seed: Seed | None = None
    stop: str | list[str] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    user: str | None = None
    # vLLM's extensions (its SamplingParams)
    top_k: TopK | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=2)] | None = None
    min_tokens: Annotated[int, Field(ge=0)] | None = None
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None
    stop_token_ids: Annotated[list[TokenId], Field(max_length=MAX_STOP_TOKEN_IDS)] | None = None
    # Known, not served: refused by name in `validate_request`.
    suffix: Any | None = None
    prompt_logprobs: Any | None = None
    include_stop_str_in_output: Any | None = None
    spaces_between_special_tokens: Any | None = None
    response_format: Any | None = None
    structured_outputs: Any | None = None
    guided_json: Any | None = None
    guided_regex: Any | None = None
    guided_choice: Any | None = None
    guided_grammar: Any | None = None
    truncate_prompt_tokens: Any | None = None
    allowed_token_ids: Any | None = None
    bad_words: Any | None = None
    use_beam_search: Any | None = None

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: a string, or token ids."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]  # type: ignore[list-item]
        return list(p)  # type: ignore[arg-type]

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


# Known fields the worker cannot honour, with what to do instead (None: any value is refused
# but false/empty).
NOT_SERVED = {
    "suffix": "insertion (suffix) is not supported by gpt-oss",
    "prompt_logprobs": "prompt logprobs are not served by this worker",
    "include_stop_str_in_output": "the stop string is never part of the output here",
    "spaces_between_special_tokens": "special tokens are decoded without added spaces here",
    "response_format": "structured output is served on /v1/chat/completions "
                       "(response_format), not on text completions",
    "structured_outputs": "structured output is served on /v1/chat/completions",
    "guided_json": "structured output is served on /v1/chat/completions",
    "guided_regex": "regex-constrained output is not served by this worker",
    "guided_choice": "structured output is served on /v1/chat/completions",
    "guided_grammar": "grammar-constrained output is not served by this worker",
    "truncate_prompt_tokens": "prompts are never truncated here; shorten the prompt",
    "allowed_token_ids": "allowed_token_ids is not served by this worker; use logit_bias",
    "bad_words": "bad_words is not served by this worker; use logit_bias",
    "use_beam_search": "beam search is not served by this worker",
}


def parse_completion_request(body: Any) -> CompletionRequest:
    """A completions body as a typed request; every error names its field."""
    try:
        return parse_body(CompletionRequest, body)
    except InvalidRequest as exc:
        if exc.param == "prompt" and "valid string" in exc.message:  # pydantic's union error
            raise InvalidRequest(
                "prompt must be a string, a list of token ids, a list of strings or a list "
                f"of token-id lists (each id from 0 to {VOCAB_SIZE - 1})",
                param="prompt") from None
        raise


def validate_request(req: CompletionRequest) -> None:
    """Rules pydantic cannot see; raises InvalidRequest naming the parameter."""
    for name, why in NOT_SERVED.items():
        value = getattr(req, name)
        if value not in (None, False, "", [], {}):
            if name == "response_format" and isinstance(value, dict) \
                    and value.get("type") == "text":
                continue
            if name == "spaces_between_special_tokens" and value is True \
                    and req.skip_special_tokens is not False:
                continue  # no special token in the text: nothing to space
            raise InvalidRequest(f"{name}: {why}", param=name)
    n = req.n or 1
    if req.best_of is not None and req.best_of != n:
        raise InvalidRequest(f"best_of={req.best_of} is not served: this worker returns every "
                             "choice it generates, so best_of must equal n "
                             f"({n}) or be left out", param="best_of")
    prompts = req.prompts()
    if not prompts:
        raise InvalidRequest("prompt must not be empty", param="prompt")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            where = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
            raise InvalidRequest(f"{where} must not be empty", param=where)
    if req.echo and req.logprobs is not None:
        raise InvalidRequest("echo with logprobs needs the prompt's logprobs, which this "
                             "worker does not serve: send echo or logprobs, not both",
                             param="echo")
    check_logit_bias(req.logit_bias)
    if req.min_tokens and req.max_tokens is not None and req.min_tokens > req.max_tokens:
        raise InvalidRequest(f"min_tokens={req.min_tokens} is above max_tokens="
                             f"{req.max_tokens}", param="min_tokens")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("stream_options is only allowed when stream is true",
                             param="stream_options")
