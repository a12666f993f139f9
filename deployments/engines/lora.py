"""Task LoRA adapters chosen per row of a batch: one forward pass may embed inputs of different tasks.

The jina-embeddings families keep every task's low-rank pair (A_t, B_t) next to a frozen base weight and pick
the task per input. Their official code loops over the tasks of a batch (v4: `MultiAdapterLinear` runs each
task's rows separately; v3 merges weights per task); here every row gathers its own pair instead:

    y = x W^T + b + ((x A_t^T) B_t^T) * scaling,   scaling = alpha / r

Adapter tensors are stacked on a leading axis: lora_A [n + 1, r, in], lora_B [n + 1, out, r] for a Linear;
the last entry stays all zeros and stands for "no adapter". When every row of a batch uses the same adapter,
two plain matmuls replace the gathered batched ones (the common case: one request, one task).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AdapterRows:
    """The adapter index of each row of a batch (`index` [B] on the model's device), and `single`: the one
    index every row shares, or None when rows differ. Built on the host, so no device sync is needed later."""

    index: torch.Tensor
    single: int | None

    @classmethod
    def of(cls, adapters: Sequence[int], device: torch.device | str) -> AdapterRows:
        values = [int(a) for a in adapters]
        single = values[0] if values and all(v == values[0] for v in values) else None
        return cls(torch.tensor(values, dtype=torch.long, device=device), single)


def lora_delta(x: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, rows: AdapterRows, scaling: float):
    """((x A_t^T) B_t^T) * scaling with t the row's adapter; x [B, ..., in] -> [B, ..., out]."""
    if rows.single is not None:
        return F.linear(F.linear(x, lora_A[rows.single]) * scaling, lora_B[rows.single])
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    down = torch.bmm(flat, lora_A[rows.index].transpose(1, 2)) * scaling  # [B, T, r]
    up = torch.bmm(down, lora_B[rows.index].transpose(1, 2))  # [B, T, out]
    return up.reshape(*x.shape[:-1], up.shape[-1])


class LoRALinear(nn.Module):
    """Linear whose rows each add their own adapter's low-rank delta. `lora_A` [n + 1, r, in] and
    `lora_B` [n + 1, out, r]; the last adapter is all zeros ("no task")."""

    def __init__(self, fan_in: int, fan_out: int, adapters: int, rank: int, scaling: float, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_out, fan_in), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(fan_out), requires_grad=False) if bias else None
        self.lora_A = nn.Parameter(torch.zeros(adapters + 1, rank, fan_in), requires_grad=False)
        self.lora_B = nn.Parameter(torch.zeros(adapters + 1, fan_out, rank), requires_grad=False)
        self.scaling = scaling

    def forward(self, x: torch.Tensor, rows: AdapterRows | None) -> torch.Tensor:
        """x [B, T, in]; rows: the adapter per row (None: no row uses an adapter)."""
        y = F.linear(x, self.weight, self.bias)
        if rows is None:
            return y
        return y + lora_delta(x, self.lora_A, self.lora_B, rows, self.scaling)

    @classmethod
    def around(cls, linear: nn.Linear, adapters: int, rank: int, scaling: float) -> LoRALinear:
        """A LoRALinear that takes over an existing Linear's weight (and bias), with zero adapters."""
        out = cls(linear.in_features, linear.out_features, adapters, rank, scaling, bias=linear.bias is not None)
        out.weight = nn.Parameter(linear.weight.data, requires_grad=False)
        if linear.bias is not None:
            out.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        return out.to(dtype=linear.weight.dtype, device=linear.weight.device)


class BatchAdapters:
    """Which adapter each row of the running forward pass uses: set by the engine around a forward, read by
    every `SelectedLoRALinear` of the model (so a stock transformers module can call them as plain Linears).
    One model thread per engine runs forwards, so one holder per model suffices."""

    def __init__(self) -> None:
        self.rows: AdapterRows | None = None


class SelectedLoRALinear(LoRALinear):
    """A LoRALinear called like nn.Linear (`layer(x)`); the rows' adapters come from a shared BatchAdapters."""

    selection: BatchAdapters

    def forward(self, x: torch.Tensor, rows: AdapterRows | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, rows if rows is not None else self.selection.rows)

    @classmethod
    def wrap(
        cls, linear: nn.Linear, selection: BatchAdapters, adapters: int, rank: int, scaling: float
    ) -> SelectedLoRALinear:
        out = cls.around(linear, adapters, rank, scaling)
        out.selection = selection
        return out  # type: ignore[return-value]


class LoRAEmbedding(nn.Embedding):
    """Embedding table plus per-row adapters: `lora_A` [n + 1, V, r], `lora_B` [n + 1, r, H] (last: zeros).
    An nn.Embedding, so the runtime counts its table as a lookup, not as compute."""

    def __init__(self, num: int, dim: int, adapters: int, rank: int, scaling: float) -> None:
        super().__init__(num, dim)
        self.weight.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.zeros(adapters + 1, num, rank), requires_grad=False)
        self.lora_B = nn.Parameter(torch.zeros(adapters + 1, rank, dim), requires_grad=False)
        self.scaling = scaling

    def forward(self, ids: torch.Tensor, rows: AdapterRows | None = None) -> torch.Tensor:  # type: ignore[override]
        out = F.embedding(ids, self.weight)
        if rows is None:
            return out
        if rows.single is not None:
            return out + (self.lora_A[rows.single][ids] * self.scaling) @ self.lora_B[rows.single]
        down = self.lora_A[rows.index[:, None], ids] * self.scaling  # [B, T, r]
        return out + torch.bmm(down, self.lora_B[rows.index])
