"""The gpt-oss tokenizer (o200k_harmony), rebuilt offline from the vocabulary that
`openai_harmony` embeds: no network, no tiktoken file, no Hub download.

The result is a `PreTrainedTokenizerFast` whose encodings equal Harmony's: 199,998
ordinary byte-level BPE ranks plus the 1,090 special tokens at ids 199998-201087
(`<|startoftext|>`, `<|endoftext|>`, `<|return|>`, `<|constrain|>`, `<|channel|>`,
`<|start|>`, `<|end|>`, `<|message|>`, `<|call|>` and `<|reserved_N|>` for the rest).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openai_harmony import HarmonyEncoding

NUM_ORDINARY = 199_998
VOCAB_SIZE = 201_088
BOS_TOKEN = "<|startoftext|>"
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|return|>"

# tiktoken's o200k_base split pattern (o200k_harmony uses the same one).
O200K_PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@functools.cache
def harmony_encoding() -> HarmonyEncoding:
    """The gpt-oss Harmony encoding (vocabulary embedded in the wheel)."""
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def _ranks_and_specials() -> tuple[dict[bytes, int], list[str]]:
    enc = harmony_encoding()
    decode_bytes = enc._inner.decode_bytes  # one token at a time, specials included
    ranks = {bytes(decode_bytes([i])): i for i in range(NUM_ORDINARY)}
    if len(ranks) != NUM_ORDINARY:
        raise RuntimeError("Harmony vocabulary has duplicate byte strings")
    specials = [bytes(decode_bytes([i])).decode() for i in range(NUM_ORDINARY, VOCAB_SIZE)]
    return ranks, specials


def _converted(ranks: dict[bytes, int], specials: list[str]) -> Any:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _HarmonyConverter(TikTokenConverter):  # type: ignore[misc]
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return ranks

    converter = _HarmonyConverter(vocab_file="<harmony>", pattern=O200K_PATTERN,
                                  extra_special_tokens=specials)
    return converter.converted()


def build_tokenizer(dest: Path) -> None:
    """Write the gpt-oss tokenizer files (tokenizer.json, tokenizer_config.json, ...) to `dest`."""
    from transformers import PreTrainedTokenizerFast

    ranks, specials = _ranks_and_specials()
    backend = _converted(ranks, specials)
    if backend.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {backend.get_vocab_size()} tokens, not {VOCAB_SIZE}")
    for offset, name in enumerate(specials):
        if backend.token_to_id(name) != NUM_ORDINARY + offset:
            raise RuntimeError(f"special token {name} landed on the wrong id")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=131_072,
        clean_up_tokenization_spaces=False,
    )
    dest.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(dest))
