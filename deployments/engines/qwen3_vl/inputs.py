"""What the Qwen3-VL engines hand around: a side with its media resized, a prepared prompt, a token count.

`VLItem` (the caller's input) is engine-level data shared with the media intake:
`deployments.engines.visual_inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from deployments.engines.visual_inputs import Video
from deployments.engines.vl_vision import VisualInput


@dataclass(frozen=True)
class TokenCount:
    total: int  # sequence length the model runs (template, text, timestamps and visual tokens)
    visual: int  # <|image_pad|> / <|video_pad|> tokens
    patches: int  # vision-tower patches (4 per visual token with merge 2)

    @property
    def text(self) -> int:
        return self.total - self.visual


@dataclass
class VLPrepared:
    """A prompt ready for the model: token ids and the resized media in prompt order."""

    ids: list[int]
    visuals: list[VisualInput]
    full_length: int  # tokens before any truncation
    visual_tokens: int
    patches: int

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.ids)

    @property
    def cost(self) -> int:
        """Batch cost in token slots (the sequence length; the vision tower is bounded separately)."""
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class PreparedSide:
    """One side of a prompt (an embedding item, a rerank query or document) with its media resized."""

    text: str | None
    images: tuple[Image.Image, ...]
    videos: tuple[Video, ...]
    visuals: list[VisualInput]  # videos first, then images (the recipe's order)
    has_pixels: bool
