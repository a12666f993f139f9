"""The official Qwen3-VL prompts, written as pieces: instructions, chat layout, and the load-time template check.

Recipes (QwenLM/Qwen3-VL-Embedding `src/models`, the model cards):

embedding  messages: system = the instruction (default "Represent the user's input."; a given
           instruction is stripped and gets a final "." unless it ends in punctuation); user = videos,
           then images, then text ("NULL" when the item is empty). Rendered with the chat template and
           the generation prompt:
             <|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n{videos}{images}{text}
             <|im_end|>\\n<|im_start|>assistant\\n
reranker   system = 'Judge whether the Document meets the requirements based on the Query and the
           Instruct provided. Note that the answer can only be "yes" or "no".'; user =
           "<Instruct>: {instruction}<Query>:{query parts}\\n<Document>:{document parts}" (parts: videos,
           images, text, or "NULL"); default instruction "Given a search query, retrieve relevant
           candidates that answer the query."; generation prompt.
vision     an image is <|vision_start|> + <|image_pad|> x tokens + <|vision_end|>; a video is, for each
           temporal patch, "<{t:.1f} seconds>" + <|vision_start|> + <|video_pad|> x tokens-per-frame +
           <|vision_end|> (this replaces the whole <|vision_start|><|video_pad|><|vision_end|> of the
           template, as Qwen3VLProcessor does in transformers 4.57, the recipe's version; transformers
           5.x nests it inside another start/end pair, which the models were not trained with). The
           expansion is `tokens.PromptEncoder`'s; here a visual is one `VisualSlot`.

A prompt is a list of pieces: plain text (template text and client text alike), `Special` tokens, and
`VisualSlot`s (an index into the prompt's visual inputs). The checkpoint's own chat template is rendered
once at load, on a probe, and compared with the same probe written as pieces (one `Placeholder` per image /
video): a mismatch is logged, and the recipe layout is used either way.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deployments.engines.qwen3_vl.inputs import PreparedSide

log = logging.getLogger(__name__)

EMBEDDING_INSTRUCTION = "Represent the user's input."
RERANKER_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
RERANKER_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
SPECIAL_TOKENS = (IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)


@dataclass(frozen=True)
class Special:
    token: str


@dataclass(frozen=True)
class VisualSlot:
    index: int  # position in the prompt's visual list


@dataclass(frozen=True)
class Placeholder:
    kind: str  # "image" | "video": one template placeholder, for the load-time template check


Piece = str | Special | VisualSlot | Placeholder

# The end of every prompt: close the user turn and open the assistant's (the generation prompt).
SUFFIX: tuple[Piece, ...] = (Special(IM_END), "\n", Special(IM_START), "assistant\n")


def normalize_instruction(instruction: str | None) -> str | None:
    """The embedding recipe: strip, and end with punctuation (a '.' is added otherwise)."""
    if not instruction:
        return None
    text = instruction.strip()
    if text and not unicodedata.category(text[-1]).startswith("P"):
        text += "."
    return text or None


def chat_prompt(system: str, user: Sequence[Piece]) -> list[Piece]:
    """A system turn, a user turn and the generation prompt."""
    return [Special(IM_START), "system\n" + system, Special(IM_END), "\n", Special(IM_START), "user\n", *user, *SUFFIX]


def side_pieces(side: PreparedSide, offset: int) -> list[Piece]:
    """Videos, then images, then text; "NULL" for an empty side. `offset`: visuals of earlier sides."""
    pieces: list[Piece] = [VisualSlot(offset + i) for i in range(len(side.visuals))]
    if side.text is not None:
        pieces.append(side.text)
    elif not side.visuals:
        pieces.append("NULL")
    return pieces


def embedding_prompt(side: PreparedSide, system: str) -> list[Piece]:
    return chat_prompt(system, side_pieces(side, 0))


def reranker_prompt(query: PreparedSide, document: PreparedSide, instruction: str) -> list[Piece]:
    return chat_prompt(
        RERANKER_SYSTEM,
        [
            "<Instruct>: " + instruction + "<Query>:",
            *side_pieces(query, 0),
            "\n<Document>:",
            *side_pieces(document, len(query.visuals)),
        ],
    )


# -- the load-time template check ------------------------------------------------------------------------
@dataclass(frozen=True)
class TemplateProbe:
    """Chat messages for the checkpoint's template, and the same prompt as our pieces."""

    messages: list[dict[str, Any]]
    pieces: list[Piece]


EMBEDDING_PROBE = TemplateProbe(
    messages=[
        {"role": "system", "content": [{"type": "text", "text": "Probe."}]},
        {
            "role": "user",
            "content": [
                {"type": "video", "video": "v"},
                {"type": "image", "image": "i"},
                {"type": "text", "text": "t"},
            ],
        },
    ],
    pieces=chat_prompt("Probe.", [Placeholder("video"), Placeholder("image"), "t"]),
)

RERANKER_PROBE = TemplateProbe(
    messages=[
        {"role": "system", "content": [{"type": "text", "text": RERANKER_SYSTEM}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<Instruct>: probe"},
                {"type": "text", "text": "<Query>:"},
                {"type": "image", "image": "i"},
                {"type": "text", "text": "q"},
                {"type": "text", "text": "\n<Document>:"},
                {"type": "video", "video": "v"},
                {"type": "text", "text": "d"},
            ],
        },
    ],
    pieces=chat_prompt(
        RERANKER_SYSTEM,
        ["<Instruct>: probe<Query>:", Placeholder("image"), "q\n<Document>:", Placeholder("video"), "d"],
    ),
)


def render(pieces: Sequence[Piece]) -> str:
    """The template-level string (one placeholder per image / video), for the load-time template check."""
    out = []
    for piece in pieces:
        if isinstance(piece, Special):
            out.append(piece.token)
        elif isinstance(piece, Placeholder):
            out.append(VISION_START + (IMAGE_PAD if piece.kind == "image" else VIDEO_PAD) + VISION_END)
        else:
            out.append(piece)
    return "".join(out)


def check_template(tokenizer: Any, probe: TemplateProbe, source: str) -> bool | None:
    """Whether the checkpoint's chat template renders the probe as the recipe layout does (warns if not).

    None when the tokenizer has no chat template or it does not render.
    """
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    try:
        rendered = tokenizer.apply_chat_template(probe.messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # a template we cannot render is only worth a warning
        log.warning("%s: chat template did not render (%s); using the recipe layout", source, exc)
        return None
    ours = render(probe.pieces)
    if rendered != ours:
        log.warning(
            "%s: the checkpoint's chat template differs from the recipe layout; using the recipe layout.\n"
            "template: %r\nrecipe:   %r",
            source,
            rendered,
            ours,
        )
    return rendered == ours
