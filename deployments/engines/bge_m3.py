"""BGE-M3's three outputs from one forward pass: dense (CLS), sparse (lexical weights) and ColBERT vectors.

The recipe is the official one (FlagEmbedding's M3 model), restated here:

- dense: the last hidden state of the first token (CLS, `<s>`), L2-normalized.
- sparse: one weight per token, `relu(sparse_linear(h_t))` with `sparse_linear` a Linear(hidden -> 1).
  A token id that occurs several times keeps its largest weight; the tokenizer's cls, eos, pad and unk
  ids are dropped, and so are weights that are not > 0.
- colbert: `colbert_linear(h_t)` for every real token except the first (CLS), each vector
  L2-normalized; `colbert_linear` is a Linear(hidden -> colbert_dim) (1024 -> 1024 for bge-m3). The
  final `</s>` is kept, so an input of n tokens gives n - 1 vectors.

The two heads ship as `sparse_linear.pt` and `colbert_linear.pt` (torch-saved `nn.Linear` state dicts)
beside the model's weights. An engine asked for a head whose file is missing refuses to start: a
randomly initialised head would answer with plausible-looking noise.

No Ray here, like every engine: the deployment, the tests and the benchmarks use it as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from deployments.engines.micro_batches import plan_micro_batches
from deployments.engines.pooling import pool
from deployments.engines.protocol import Capabilities, EmbeddingOutput, EngineOptions
from deployments.engines.runtime import Runtime
from deployments.engines.source import resolve_source
from deployments.engines.text_embedding import TextEmbeddingEngine, TextEmbeddingRecipe
from deployments.engines.tokenization import Tokens

log = logging.getLogger(__name__)

SPARSE_HEAD_FILE = "sparse_linear.pt"
COLBERT_HEAD_FILE = "colbert_linear.pt"
OUTPUTS = ("dense", "sparse", "colbert")

# BGE-M3 is an XLM-R encoder whose dense vector is always the CLS state, whatever a pooling config says.
BGE_M3 = TextEmbeddingRecipe(pooling="cls")


class MissingHeadError(FileNotFoundError):
    """A head the engine was asked to serve has no weights file in the model's directory."""


@dataclass(slots=True)
class SparseVector:
    """Lexical weights of one input: token ids ascending, each with its (max-aggregated) weight > 0."""

    indices: np.ndarray  # int64 [k]
    values: np.ndarray  # float32 [k]

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.indices.tolist(), self.values.tolist(), strict=True))

    def __len__(self) -> int:
        return int(self.indices.shape[0])


class BGEM3Engine(TextEmbeddingEngine):
    """TextEmbeddingEngine (CLS pooling) plus BGE-M3's sparse and ColBERT heads.

    `sparse` / `colbert` say which heads to load; each one asked for must be there (MissingHeadError
    naming the file and the model otherwise). `embed` (inherited) still gives the raw CLS vectors, so
    the dense-only path is the same as for any encoder; `encode` gives any mix of the three outputs
    from one forward pass per micro-batch.
    """

    def __init__(
        self,
        source: str,
        *,
        sparse: bool = True,
        colbert: bool = True,
        runtime: Runtime | None = None,
        max_tokens: int | None = None,
        max_batch_tokens: int = 16384,
        trust_remote_code: bool = False,
    ) -> None:
        # Find the heads before loading the encoder: a missing file fails in a second, not after minutes.
        head_files = {}
        if sparse:
            head_files["sparse"] = locate_head(source, SPARSE_HEAD_FILE)
        if colbert:
            head_files["colbert"] = locate_head(source, COLBERT_HEAD_FILE)
        super().__init__(
            source,
            BGE_M3,
            runtime=runtime,
            max_tokens=max_tokens,
            max_batch_tokens=max_batch_tokens,
            trust_remote_code=trust_remote_code,
        )
        if self.padding_side != "right":  # encode() reads CLS at position 0 and ColBERT rows from 1
            raise ValueError("BGE-M3 needs right padding")
        hidden = self.dimensions
        # The heads run in float32 on the model's device: cheap next to the encoder, and no bf16 rounding
        # of the lexical weights.
        self.sparse_head: torch.nn.Linear | None = None
        self.colbert_head: torch.nn.Linear | None = None
        if sparse:
            self.sparse_head = load_head(head_files["sparse"], hidden, out_features=1).to(self.runtime.device)
        if colbert:
            self.colbert_head = load_head(head_files["colbert"], hidden).to(self.runtime.device)
        self.colbert_dimensions = int(self.colbert_head.out_features) if self.colbert_head is not None else None

        tok = self.tokenizer
        unused = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
        self.unused_token_ids = np.array(sorted(i for i in unused if i is not None), dtype=np.int64)
        log.info("bge-m3 heads: sparse=%s colbert=%s (dim %s)", sparse, colbert, self.colbert_dimensions)

    @classmethod
    def load(cls, source: str, options: EngineOptions) -> BGEM3Engine:
        return cls(
            source,
            sparse="sparse" in options.outputs,
            colbert="colbert" in options.outputs,
            runtime=options.runtime,
            max_tokens=options.max_tokens,
            max_batch_tokens=options.max_batch_tokens,
            trust_remote_code=options.trust_remote_code,
        )

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            max_tokens=self.max_tokens,
            dimensions=self.dimensions,
            outputs=self.outputs,
            token_ids=True,
            token_id_inputs=True,
        )

    def forward(self, items: Sequence[Tokens]) -> list[EmbeddingOutput]:
        """Every loaded head from one forward; dense raw (the caller cuts and normalizes), requests pick theirs."""
        return self.encode(
            items,
            dense=True,
            sparse=self.sparse_head is not None,
            colbert=self.colbert_head is not None,
            normalize_dense=False,
        )

    @property
    def outputs(self) -> tuple[str, ...]:
        """The outputs this engine can give (dense always; sparse / colbert when their head is loaded)."""
        names = ["dense"]
        if self.sparse_head is not None:
            names.append("sparse")
        if self.colbert_head is not None:
            names.append("colbert")
        return tuple(names)

    # -- forward ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(
        self,
        items: Sequence[Tokens],
        *,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        normalize_dense: bool = True,
    ) -> list[EmbeddingOutput]:
        """Any mix of the three outputs, in the order given, one forward per micro-batch.

        `normalize_dense=False` gives the raw CLS state (for a caller that cuts and normalizes itself).
        """
        if not (dense or sparse or colbert):
            raise ValueError("ask for at least one of dense, sparse, colbert")
        if sparse and self.sparse_head is None:
            raise ValueError("this engine was started without the sparse head (sparse_linear.pt)")
        if colbert and self.colbert_head is None:
            raise ValueError("this engine was started without the ColBERT head (colbert_linear.pt)")

        results = [EmbeddingOutput() for _ in items]
        for group in plan_micro_batches([len(t) for t in items], self.max_batch_tokens):
            hidden, mask = self._forward([items[i].ids for i in group])
            lengths = [len(items[i]) for i in group]
            for row, i in enumerate(group):
                if items[i].keep_states:  # right padding: the real tokens are 0..n-1
                    results[i].tokens = hidden[row, : lengths[row]].float().cpu().numpy()
            if dense:
                vectors = pool(hidden, mask, "cls").float()
                if normalize_dense:
                    vectors = F.normalize(vectors, p=2, dim=-1)
                vectors = vectors.cpu().numpy()
                for row, i in enumerate(group):
                    results[i].dense = vectors[row].copy()
            if sparse or colbert:
                hidden = hidden.float()  # the heads are float32
            if sparse:
                weights = torch.relu(self.sparse_head(hidden)).squeeze(-1).cpu().numpy()  # [rows, T]
                for row, i in enumerate(group):
                    results[i].sparse = self._lexical_weights(items[i].ids, weights[row, : lengths[row]])
            if colbert:
                # Right padding: row r's real tokens are 0..n-1; CLS (0) is dropped, so rows 1..n-1 remain.
                vecs = F.normalize(self.colbert_head(hidden[:, 1:]), p=2, dim=-1).cpu().numpy()
                for row, i in enumerate(group):
                    results[i].colbert = np.ascontiguousarray(vecs[row, : lengths[row] - 1], dtype=np.float32)
        return results

    def _lexical_weights(self, ids: Sequence[int], weights: np.ndarray) -> SparseVector:
        ids_arr = np.asarray(ids, dtype=np.int64)
        keep = (weights > 0) & ~np.isin(ids_arr, self.unused_token_ids)
        kept_ids, kept_w = ids_arr[keep], weights[keep].astype(np.float32)
        indices, inverse = np.unique(kept_ids, return_inverse=True)
        values = np.zeros(indices.shape[0], dtype=np.float32)
        np.maximum.at(values, inverse, kept_w)  # a repeated token keeps its largest weight
        return SparseVector(indices=indices, values=values)

    # -- views ------------------------------------------------------------------------------------
    def token_strings(self, vector: SparseVector) -> list[str]:
        """Each id of `vector.indices` decoded alone, in the same order (a `tokens` list beside `indices`)."""
        return [self.tokenizer.decode([token_id]) for token_id in vector.indices.tolist()]

    def sparse_tokens(self, vector: SparseVector) -> dict[str, float]:
        """`{token: weight}`: each id decoded alone by the tokenizer (as FlagEmbedding's
        `convert_id_to_token` does). Two ids that decode to the same string keep the larger weight."""
        out: dict[str, float] = {}
        for token, weight in zip(self.token_strings(vector), vector.values.tolist(), strict=True):
            if weight > out.get(token, 0.0):
                out[token] = weight
        return out


# -- heads --------------------------------------------------------------------------------------------
def locate_head(source: str, filename: str) -> str:
    """The local path of a head file: beside the model in a local directory, or from the Hub (cache)."""
    path = resolve_source(source)
    if os.path.isdir(path):
        candidate = os.path.join(path, filename)
        if os.path.isfile(candidate):
            return candidate
        raise MissingHeadError(
            f"{filename} is missing from the model directory {path}: BGE-M3's "
            f"{'sparse' if filename == SPARSE_HEAD_FILE else 'ColBERT'} head cannot run without its trained "
            "weights. Add the file (it ships with BAAI/bge-m3) or start the model without that output."
        )
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo_id=path, filename=filename)
    except Exception as exc:  # not found, offline and not cached, no such repository
        raise MissingHeadError(
            f"{filename} could not be found for the model {path} ({type(exc).__name__}): BGE-M3's head cannot "
            "run without its trained weights. Put the file in the model directory or start the model without "
            "that output."
        ) from exc


def load_head(path: str, hidden_size: int, out_features: int | None = None) -> torch.nn.Linear:
    """An `nn.Linear` from a torch-saved state dict (tensors only: weights_only), shapes checked."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    weight = state.get("weight") if isinstance(state, dict) else None
    if weight is None or weight.dim() != 2 or "bias" not in state:
        raise ValueError(f"{path}: expected an nn.Linear state dict with 'weight' and 'bias'")
    out, inp = weight.shape
    if inp != hidden_size or (out_features is not None and out != out_features):
        want = f"[{out_features if out_features is not None else 'any'}, {hidden_size}]"
        raise ValueError(f"{path}: weight has shape {list(weight.shape)}, expected {want} for this model")
    head = torch.nn.Linear(inp, out)
    head.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return head.requires_grad_(False).eval()
