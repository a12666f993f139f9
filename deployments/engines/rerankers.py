"""Reranking engines: score (query, document) pairs. No Ray.

- CrossEncoderEngine (bge-reranker-v2-m3): XLM-R sequence classifier, pair `<s>q</s></s>d</s>`, only the
  document is cut to fit the model's limit, one logit (sigmoid -> [0, 1] in engines/postprocess.py).
- Qwen3RerankerEngine (Qwen3-Reranker 0.6B/4B/8B): causal LM asked "yes" or "no" inside the official
  judge template; logit = yes - no at the last position (its sigmoid is softmax([no, yes]) at yes = P(yes)).

Both tokenize a pair into one `Tokens` item and score lists of items in length-sorted micro-batches,
so a deployment can batch pairs of many requests by tokens, like embeddings.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from deployments.engines.facts import read_facts
from deployments.engines.micro_batches import pad_batch, plan_micro_batches
from deployments.engines.protocol import Capabilities, EngineOptions, InputError
from deployments.engines.runtime import Runtime, choose_runtime
from deployments.engines.source import resolve_source
from deployments.engines.tokenization import Tokens

log = logging.getLogger(__name__)

QWEN3_RERANKER_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
QWEN3_RERANKER_PREFIX = f"<|im_start|>system\n{QWEN3_RERANKER_SYSTEM}<|im_end|>\n<|im_start|>user\n"
QWEN3_RERANKER_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_RERANKER_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def qwen3_reranker_body(instruction: str, query: str, document: str) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


class _PairEngine:
    """Shared loading, clipping and micro-batched scoring."""

    padding_side = "right"

    def __init__(self, source: str, runtime: Runtime | None, max_tokens: int | None, max_batch_tokens: int) -> None:
        self.path = resolve_source(source)
        self.runtime = runtime or choose_runtime()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        backend = copy.deepcopy(self.tokenizer.backend_tokenizer)
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self.max_batch_tokens = max_batch_tokens
        self._requested_max_tokens = max_tokens
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (self.tokenizer.eos_token_id or 0))

    def clip(self, texts: Sequence[str], max_tokens: int | None) -> list[str]:
        """Cut each text to at most `max_tokens` tokens (at a token boundary), e.g. Cohere's max_tokens_per_doc."""
        if not max_tokens:
            return list(texts)
        out = []
        for text, enc in zip(texts, self._backend.encode_batch(list(texts), add_special_tokens=False), strict=True):
            out.append(text[: enc.offsets[max_tokens - 1][1]] if len(enc.ids) > max_tokens else text)
        return out

    @classmethod
    def load(cls, source: str, options: EngineOptions) -> _PairEngine:
        return cls(
            source,
            runtime=options.runtime,
            max_tokens=options.max_tokens,
            max_batch_tokens=options.max_batch_tokens,
            **cls._recipe_options(options),
        )

    @staticmethod
    def _recipe_options(options: EngineOptions) -> dict:
        return {}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_tokens=self.max_tokens, dimensions=None, outputs=(), token_ids=True)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=True)]

    def prepare_pairs(
        self,
        query: str,
        documents: Sequence[str],
        instruction: str | None = None,
        max_tokens_per_doc: int | None = None,
    ) -> list[Tokens]:
        """One `Tokens` item per (query, document) pair, documents first cut to `max_tokens_per_doc` tokens."""
        return self._pairs(query, self.clip(documents, max_tokens_per_doc), instruction)

    def _pairs(self, query: str, documents: Sequence[str], instruction: str | None) -> list[Tokens]:
        raise NotImplementedError

    @torch.inference_mode()
    def forward(self, items: Sequence[Tokens]) -> np.ndarray:
        """Relevance logits per pair, in the order given (engines/postprocess.py turns them into scores)."""
        out = np.empty(len(items), dtype=np.float32)
        for group in plan_micro_batches([len(t) for t in items], self.max_batch_tokens):
            ids, mask = pad_batch([items[i].ids for i in group], self.pad_id, self.padding_side)
            out[group] = self._logits(ids.to(self.runtime.device), mask.to(self.runtime.device)).float().cpu().numpy()
        return out

    def _logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class CrossEncoderEngine(_PairEngine):
    def __init__(
        self,
        source: str,
        *,
        runtime: Runtime | None = None,
        max_tokens: int | None = 512,
        max_batch_tokens: int = 16384,
    ) -> None:
        super().__init__(source, runtime, max_tokens, max_batch_tokens)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.path, dtype=self.runtime.dtype, attn_implementation=self.runtime.attn_implementation
        )
        self.model.to(self.runtime.device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"{source}: a cross-encoder reranker needs one output logit")
        facts = read_facts(self.path)
        self.max_tokens = int(max_tokens or facts.max_tokens or 512)
        self.num_special = self._backend.num_special_tokens_to_add(True)

    def _pairs(self, query: str, documents: Sequence[str], instruction: str | None) -> list[Tokens]:
        """`<s> q </s></s> d </s>`; only the document is cut to fit (the query must fit by itself)."""
        if instruction is not None:
            raise InputError("a cross-encoder takes no instruction")
        q = self._backend.encode(query, add_special_tokens=False)
        budget = self.max_tokens - self.num_special - len(q.ids)
        if budget < 1:
            raise QueryTooLong(len(q.ids) + self.num_special + 1, self.max_tokens)
        out = []
        for d in self._backend.encode_batch(list(documents), add_special_tokens=False):
            full = len(q.ids) + len(d.ids) + self.num_special
            if len(d.ids) > budget:
                d.truncate(budget, direction="right")
            ids = self._backend.post_process(q, d).ids
            out.append(Tokens(ids=ids, full_length=full))
        return out

    def _logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).logits[:, 0]


class Qwen3RerankerEngine(_PairEngine):
    padding_side = "left"

    def __init__(
        self,
        source: str,
        *,
        runtime: Runtime | None = None,
        max_tokens: int | None = 8192,
        max_batch_tokens: int = 16384,
        default_instruction: str | None = None,
    ) -> None:
        super().__init__(source, runtime, max_tokens, max_batch_tokens)
        model = AutoModelForCausalLM.from_pretrained(
            self.path, dtype=self.runtime.dtype, attn_implementation=self.runtime.attn_implementation
        )
        model.to(self.runtime.device).eval()
        self.body = model.model  # the decoder; only two rows of the LM head are ever needed
        self.yes_id = self._token_id("yes")
        self.no_id = self._token_id("no")
        head = model.get_output_embeddings().weight
        self.judge = head[[self.no_id, self.yes_id]].detach().clone()  # [2, hidden]
        self.max_tokens = int(max_tokens or 8192)
        self.default_instruction = default_instruction or QWEN3_RERANKER_DEFAULT_INSTRUCTION
        self.prefix_ids = self._backend.encode(QWEN3_RERANKER_PREFIX, add_special_tokens=False).ids
        self.suffix_ids = self._backend.encode(QWEN3_RERANKER_SUFFIX, add_special_tokens=False).ids

    def _token_id(self, token: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no single '{token}' token")
        return int(tid)

    @staticmethod
    def _recipe_options(options: EngineOptions) -> dict:
        return {"default_instruction": options.default_instruction}

    def _pairs(self, query: str, documents: Sequence[str], instruction: str | None) -> list[Tokens]:
        """prefix + tokens(`<Instruct>: ..\\n<Query>: ..\\n<Document>: ..`) cut from the right + suffix."""
        instruction = instruction or self.default_instruction
        budget = self.max_tokens - len(self.prefix_ids) - len(self.suffix_ids)
        bodies = [qwen3_reranker_body(instruction, query, d) for d in documents]
        head = len(self._backend.encode(qwen3_reranker_body(instruction, query, ""), add_special_tokens=True).ids)
        if head >= budget:
            raise QueryTooLong(head + len(self.prefix_ids) + len(self.suffix_ids) + 1, self.max_tokens)
        out = []
        for enc in self._backend.encode_batch(bodies, add_special_tokens=True):
            full = len(enc.ids) + len(self.prefix_ids) + len(self.suffix_ids)
            ids = enc.ids[:budget]
            out.append(Tokens(ids=self.prefix_ids + ids + self.suffix_ids, full_length=full))
        return out

    def _logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.body(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]  # left padded
        pair = hidden @ self.judge.to(hidden.dtype).T  # [B, 2] = logits of (no, yes)
        return pair[:, 1] - pair[:, 0]  # log-odds of "yes"


class QueryTooLong(InputError):
    def __init__(self, needed: int, limit: int) -> None:
        super().__init__(
            f"the query needs at least {needed} tokens with a document; the model's limit is {limit}", too_long=True
        )
        self.needed = needed
        self.limit = limit
