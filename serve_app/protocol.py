"""What the router sends a model deployment and what comes back (Python objects over Ray, not HTTP)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class EmbedCall:
    texts: list[str]
    truncate: bool = False
    truncation_direction: str = "right"
    dimensions: int | None = None
    normalize: bool = True
    late_chunking: bool = False


@dataclass(slots=True)
class EmbedReply:
    vectors: np.ndarray  # [n, dims] float32
    token_counts: list[int] = field(default_factory=list)
    model: str = ""

    @property
    def total_tokens(self) -> int:
        return int(sum(self.token_counts))
