"""Pack a set of tokenized inputs into padded micro-batches under a token budget.

Sorting by length inside the budget keeps padding small: each micro-batch is padded only to its own
longest member, and `rows * longest <= max_tokens` bounds activation memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MIN_FILL = 0.75  # a new micro-batch starts where inputs get shorter than this share of the group's longest


def plan_micro_batches(
    lengths: Sequence[int], max_tokens: int, max_rows: int | None = None, min_fill: float = MIN_FILL
) -> list[list[int]]:
    """Indices grouped longest-first so that rows x longest <= max_tokens (a lone long input still runs),
    cut also where lengths fall below `min_fill` x the group's longest, so no row is mostly padding."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        length = lengths[i]
        if current:
            over_budget = max(longest, length) * (len(current) + 1) > max_tokens
            over_rows = max_rows is not None and len(current) >= max_rows
            too_short = length < min_fill * longest
            if over_budget or over_rows or too_short:
                groups.append(current)
                current, longest = [], 0
        current.append(i)
        longest = max(longest, length)
    if current:
        groups.append(current)
    return groups


def plan_visual_batches(
    lengths: Sequence[int], patches: Sequence[int], max_tokens: int, max_patches: int
) -> list[list[int]]:
    """`plan_micro_batches`, each group cut further so its inputs' vision patches stay within `max_patches`
    (the vision tower's activations grow with patches, not with the text's tokens)."""
    out: list[list[int]] = []
    for group in plan_micro_batches(lengths, max_tokens):
        current: list[int] = []
        used = 0
        for i in group:
            if current and used + patches[i] > max_patches:
                out.append(current)
                current, used = [], 0
            current.append(i)
            used += patches[i]
        out.append(current)
    return out


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (input_ids, attention_mask), both [rows, longest] int64.

    torch is imported here, not at the top: the planning above is used by the batcher's metrics in processes
    that never run a model (the Serve driver builds the deployments), and should not load torch there."""
    import torch

    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq)
        if side == "left":
            ids[row, longest - n :] = torch.tensor(seq, dtype=torch.long)
            mask[row, longest - n :] = 1
        else:
            ids[row, :n] = torch.tensor(seq, dtype=torch.long)
            mask[row, :n] = 1
    return ids, mask


def padding_efficiency(lengths: Sequence[int], groups: Sequence[Sequence[int]]) -> float:
    """Real tokens over processed (padded) tokens for a plan."""
    real = sum(lengths)
    processed = sum(max(lengths[i] for i in g) * len(g) for g in groups)
    return real / processed if processed else 1.0
