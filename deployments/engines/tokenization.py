"""Tokenization with the model's own rules, and explicit truncation.

Works on the `tokenizers` backend directly: it is thread-safe, batch-encodes in Rust, and lets us
count an input's full length before deciding to cut it (nothing is ever cut silently).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class Tokens:
    """One input, ready for the model."""

    ids: list[int]
    full_length: int  # tokens the input needed before any truncation

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.ids)

    @property
    def cost(self) -> int:
        """What a batch pays for this input: its length in tokens."""
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


class TextTokenizer:
    """Encode single texts as the model was trained: its special tokens, plus an optional forced suffix.

    `required_suffix_id` is for recipes whose pooling token must end every input (Qwen3-Embedding's
    `<|endoftext|>`): appended when the tokenizer's post-processor did not already put it there.
    """

    def __init__(self, hf_tokenizer, max_tokens: int, required_suffix_id: int | None = None) -> None:
        backend = copy.deepcopy(hf_tokenizer.backend_tokenizer)
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self.max_tokens = max_tokens
        self.required_suffix_id = required_suffix_id
        probe = backend.post_process(backend.encode("x", add_special_tokens=False)).ids
        self._suffix_added_by_tokenizer = required_suffix_id is not None and probe[-1:] == [required_suffix_id]
        self.num_special = backend.num_special_tokens_to_add(False)
        if required_suffix_id is not None and not self._suffix_added_by_tokenizer:
            self.num_special += 1

    @property
    def backend(self):
        """The `tokenizers` backend (no truncation, no padding), for callers that frame ids themselves."""
        return self._backend

    def encode(self, texts: Sequence[str], truncate: bool = False, direction: str = "right") -> list[Tokens]:
        """Tokenize; over-long inputs are cut only when `truncate` (else returned whole, to be refused)."""
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        out: list[Tokens] = []
        budget = self.max_tokens - self.num_special
        for enc in encodings:
            full = len(enc.ids) + self.num_special
            if truncate and full > self.max_tokens:
                enc.truncate(max(budget, 0), direction=direction)
            ids = self._backend.post_process(enc).ids
            if self.required_suffix_id is not None and ids[-1:] != [self.required_suffix_id]:
                ids.append(self.required_suffix_id)
            out.append(Tokens(ids=ids, full_length=full))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=False)
