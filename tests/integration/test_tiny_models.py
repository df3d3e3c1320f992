"""The tiny gpt-oss checkpoints of `worker.tiny`: tokenizer, random model, scripted model.

Runs through transformers only (the vLLM engine is exercised by the server tests).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
oh = pytest.importorskip("openai_harmony")

from worker.tiny import TOKENIZER_DIRNAME, ensure_tiny_model, model_dirname  # noqa: E402
from worker.tiny import scripted as sc  # noqa: E402
from worker.tiny.tokenizer import harmony_encoding  # noqa: E402

STOP_IDS = [200002, 199999, 200012]
WEATHER_TOOL = oh.ToolDescription.new(
    "get_weather", "Get the current weather for a location",
    parameters={"type": "object", "required": ["location"],
                "properties": {"location": {"type": "string", "description": "City name"}}})


@pytest.fixture(scope="module")
def encoding() -> Any:
    return harmony_encoding()


def _system() -> Any:
    return oh.Message.from_role_and_content(oh.Role.SYSTEM, oh.SystemContent.new())


def _developer(tools: bool = True) -> Any:
    content = oh.DeveloperContent.new().with_instructions("Be brief.")
    if tools:
        content = content.with_function_tools([WEATHER_TOOL])
    return oh.Message.from_role_and_content(oh.Role.DEVELOPER, content)


def _user(text: str) -> Any:
    return oh.Message.from_role_and_content(oh.Role.USER, text)


def _tool_call() -> Any:
    return (oh.Message.from_role_and_content(oh.Role.ASSISTANT, '{"location": "Paris"}')
            .with_channel("commentary").with_recipient("functions.get_weather")
            .with_content_type("<|constrain|>json"))


def _tool_result() -> Any:
    author = oh.Author.new(oh.Role.TOOL, "functions.get_weather")
    return (oh.Message.from_author_and_content(author, '{"temperature": 21, "sky": "sunny"}')
            .with_channel("commentary").with_recipient("assistant"))


def _final(text: str) -> Any:
    return oh.Message.from_role_and_content(oh.Role.ASSISTANT, text).with_channel("final")


CONVERSATIONS: dict[str, tuple[list[Any], sc.Branch]] = {
    "hello-with-tools": ([_system(), _developer(), _user("Hello! Who are you?")], "answer"),
    "weather-without-tools": ([_system(), _user("What's the weather in Paris?")], "answer"),
    "weather-with-tools": ([_system(), _developer(), _user("What's the weather in Paris?")],
                           "tool_call"),
    "Weather-capitalised": ([_system(), _developer(), _user("Weather in Paris?")], "tool_call"),
    "tool-result": ([_system(), _developer(), _user("What's the weather in Paris?"),
                     _tool_call(), _tool_result()], "after_tool"),
    "new-question-after-tool": ([_system(), _developer(), _user("What's the weather in Paris?"),
                                 _tool_call(), _tool_result(), _final(sc.ANSWER_AFTER_TOOL),
                                 _user("Thanks! Now tell me a joke.")], "answer"),
}


def _render(encoding: Any, messages: list[Any]) -> list[int]:
    convo = oh.Conversation.from_messages(messages)
    return list(encoding.render_conversation_for_completion(convo, oh.Role.ASSISTANT))


def _greedy(model: Any, prompt: list[int], max_new_tokens: int = 60) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=STOP_IDS, pad_token_id=199999)
    return [int(t) for t in out[0, len(prompt):]]


def test_tokenizer_matches_harmony(scripted_model: Path, encoding: Any) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(scripted_model))
    assert len(tok) == 201_088
    assert (tok.eos_token, tok.eos_token_id) == ("<|return|>", 200002)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 199999)
    named = {"<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002,
             "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006,
             "<|end|>": 200007, "<|message|>": 200008, "<|call|>": 200012,
             "<|reserved_200013|>": 200013, "<|reserved_201087|>": 201087}
    for name, token_id in named.items():
        assert tok.convert_tokens_to_ids(name) == token_id
    samples = ["Hello, world!", "What's the weather in Paris?  \n\n  x = 1;\r\n",
               "数字 12345 ünïcödé 🙂 I'M DON'T we'll", "a/b/c\n//d\t\ttabs   ",
               "<|start|>user<|message|>hi<|end|><|start|>assistant<|channel|>final",
               '{"location":"Paris"}<|call|>']
    for text in samples:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == list(encoding.encode(text, allowed_special="all")), text
        assert tok.decode(ids) == text
    prompt = _render(encoding, CONVERSATIONS["tool-result"][0])
    assert tok.encode(tok.decode(prompt), add_special_tokens=False) == prompt


def test_checkpoint_files(random_model: Path, scripted_model: Path) -> None:
    from safetensors import safe_open

    for path in (random_model, scripted_model):
        config = json.loads((path / "config.json").read_text())
        assert config["model_type"] == "gpt_oss" and "quantization_config" not in config
        assert config["torch_dtype"] == "bfloat16" and config["vocab_size"] == 201_088
        assert config["layer_types"] == ["sliding_attention", "full_attention"]
        gen = json.loads((path / "generation_config.json").read_text())
        assert gen["eos_token_id"] == STOP_IDS
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            assert f.get_tensor("lm_head.weight").dtype == torch.bfloat16
        assert (path / "tokenizer.json").is_file()


def test_random_model_generates(random_model: Path, encoding: Any) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(random_model), dtype=torch.bfloat16).eval()
    prompt = _render(encoding, CONVERSATIONS["hello-with-tools"][0])
    out = _greedy(model, prompt, max_new_tokens=12)
    assert 1 <= len(out) <= 12 and all(0 <= t < 201_088 for t in out)


@pytest.fixture(scope="module")
def scripted(scripted_model: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(scripted_model), dtype=torch.bfloat16).eval()


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_scripted_model_follows_its_script(scripted: Any, encoding: Any, name: str) -> None:
    messages, branch = CONVERSATIONS[name]
    out = _greedy(scripted, _render(encoding, messages))
    assert out == sc.completion_tokens(branch), encoding.decode(out)
    assert len(out) <= 60 and out[-1] in STOP_IDS
    parsed = encoding.parse_messages_from_completion_tokens(out, oh.Role.ASSISTANT)
    got = [(m.channel, m.recipient, m.content_type, m.content[0].text) for m in parsed]
    assert got == sc.EXPECTED_MESSAGES[branch]
    if branch == "tool_call":
        assert (got[-1][1], got[-1][2]) == ("functions.get_weather", "<|constrain|>json")
        assert json.loads(got[-1][3]) == {"location": "Paris"}
    else:
        assert got[-1][3] == (sc.SCRIPTED_ANSWER if branch == "answer"
                              else sc.SCRIPTED_ANSWER_AFTER_TOOL)


def test_ensure_tiny_model_builds_once(
    tmp_path: Path, random_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from worker.tiny import models

    shutil.copytree(random_model.parent / TOKENIZER_DIRNAME, tmp_path / TOKENIZER_DIRNAME)
    calls: list[Path] = []
    real = models.build_random_model

    def counting(dest: Path, seed: int = 0) -> None:
        calls.append(dest)
        real(dest, seed)

    monkeypatch.setattr(models, "build_random_model", counting)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(
        ensure_tiny_model("random", tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [tmp_path / model_dirname("random")] * 3 and len(calls) == 1
    assert ensure_tiny_model("random", tmp_path) == results[0] and len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == sorted(
        [TOKENIZER_DIRNAME, model_dirname("random")])
    assert (results[0] / "model.safetensors").is_file()
