"""Tokenization with the model's own rules, and explicit truncation.

Works on the `tokenizers` backend directly: it is thread-safe, batch-encodes in Rust, and lets us
count an input's full length before deciding to cut it (nothing is ever cut silently).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from deployments.engines.protocol import InputError


@dataclass(slots=True)
class Tokens:
    """One input, ready for the model."""

    ids: list[int]
    full_length: int  # tokens the input needed before any truncation
    keep_states: bool = False  # the caller wants every token's final state too (TEI's /embed_all)

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
        self._head, self._tail = _special_frame(backend)
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)

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

    def encode_ids(
        self,
        sequences: Sequence[Sequence[int]],
        prefix: str | None = None,
        truncate: bool = False,
        direction: str = "right",
        vocab_size: int | None = None,
    ) -> list[Tokens]:
        """Token-id inputs framed exactly as `encode` frames a text's ids: the instruction `prefix` (a text,
        tokenized here) before them, the post-processor's special tokens around both, the required suffix.

        Ids are taken as they are (no decode and re-encode, which could change them); an id outside the
        vocabulary (`vocab_size`, default the tokenizer's) raises InputError naming the input and position."""
        limit = min(vocab_size or self.vocab_size, self.vocab_size)
        head = self._backend.encode(prefix, add_special_tokens=False).ids if prefix else []
        budget = max(self.max_tokens - self.num_special, 0)
        out: list[Tokens] = []
        for i, seq in enumerate(sequences):
            for pos, token in enumerate(seq):
                if not 0 <= token < limit:
                    raise InputError(
                        f"token id {token} at position {pos} is not in the model's vocabulary (0..{limit - 1})", i
                    )
            content = [*head, *seq]
            full = len(content) + self.num_special
            if truncate and full > self.max_tokens:
                content = content[len(content) - budget :] if direction == "left" else content[:budget]
            ids = [*self._head, *content, *self._tail]
            if self.required_suffix_id is not None and ids[-1:] != [self.required_suffix_id]:
                ids.append(self.required_suffix_id)
            out.append(Tokens(ids=ids, full_length=full))
        return out

    def token_details(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[dict]]:
        """TEI's /tokenize: per text, each token's id, text, whether it is special, and its UTF-8 byte span
        (None for special tokens). With special tokens, the ids are exactly those `encode` gives."""
        out = []
        for text, enc in zip(texts, self._backend.encode_batch(list(texts), add_special_tokens=False), strict=True):
            if add_special_tokens:
                enc = self._backend.post_process(enc)
            tokens = []
            for token_id, (start, stop), special, token in zip(
                enc.ids, enc.offsets, enc.special_tokens_mask, enc.tokens, strict=True
            ):
                if special:
                    tokens.append({"id": token_id, "text": token, "special": True, "start": None, "stop": None})
                else:
                    part = text[start:stop]
                    first = len(text[:start].encode("utf-8"))
                    last = first + len(part.encode("utf-8"))
                    tokens.append({"id": token_id, "text": part, "special": False, "start": first, "stop": last})
            suffix = self.required_suffix_id
            if add_special_tokens and suffix is not None and enc.ids[-1:] != [suffix]:
                token = self._backend.id_to_token(suffix)
                tokens.append({"id": suffix, "text": token, "special": True, "start": None, "stop": None})
            out.append(tokens)
        return out

    def decode_ids(self, sequences: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """TEI's /decode: each id list back to text; an id outside the vocabulary raises InputError."""
        for i, seq in enumerate(sequences):
            for pos, token in enumerate(seq):
                if not 0 <= token < self.vocab_size:
                    raise InputError(
                        f"token id {token} at position {pos} is not in the model's vocabulary "
                        f"(0..{self.vocab_size - 1})",
                        i,
                    )
        return self._backend.decode_batch([list(s) for s in sequences], skip_special_tokens=skip_special_tokens)

    def decode(self, ids: Sequence[int]) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=False)


def _special_frame(backend) -> tuple[list[int], list[int]]:
    """The ids the post-processor puts before and after a single text (e.g. [CLS] ... [SEP])."""
    marker = backend.encode("x", add_special_tokens=False).ids
    framed = backend.post_process(backend.encode("x", add_special_tokens=False)).ids
    for start in range(len(framed) - len(marker) + 1):
        if framed[start : start + len(marker)] == marker:
            return framed[:start], framed[start + len(marker) :]
    return [], []
