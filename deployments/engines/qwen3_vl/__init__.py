"""Qwen3-VL-Embedding and Qwen3-VL-Reranker engines: text, image, video and mixed inputs.

Plain torch + transformers, no Ray and no torchvision. The engines take media already decoded by
`deployments.media` (never a client string), build the official prompt, and run the model.

Modules
    templates  the recipes' prompts (instructions, chat layout, vision placeholders) and the template check
    tokens     prompt pieces -> token ids (no control-token injection), length limit and truncation
    inputs     prepared sides and prompts, token counts
    base       loading, patch geometry, media sizing, micro-batch planning and the forward pass
    embedding  Qwen3VLEmbeddingEngine: the last attended token's hidden state
    reranker   Qwen3VLRerankerEngine: logit(yes) - logit(no) at the last position
    Pixel preprocessing is `vl_vision`; the input types (VLItem, Video) are `visual_inputs`.

API (all synchronous; `prepare*` and `count_tokens` are thread-safe, the forward calls belong to one
model thread):

    item = VLItem(text=None, images=(PIL.Image, ...), videos=(Video, ...), instruction=None)

    emb = Qwen3VLEmbeddingEngine(source, runtime=None, limits=VisionLimits(), max_tokens=8192,
                                 max_batch_tokens=16384, max_batch_patches=65536, ...)
    emb.video_sampling() -> VideoSampling        # pass to media.load_video for this model
    emb.count_tokens(item) -> TokenCount           # exact, no pixel work: batch cost before preparing
    p = emb.prepare(item, truncate=False) -> VLPrepared   # resize + tokenize (p.num_tokens, p.cost)
    emb.embed([p, ...]) -> np.ndarray [n, dims] float32, un-normalized (length-sorted micro-batches)

    rr = Qwen3VLRerankerEngine(source, ..., max_tokens=10240)
    q = rr.prepare_side(query_item) -> PreparedSide  # resize the query's media once per request
    p = rr.prepare(q, document_item, instruction=None, truncate=False) -> VLPrepared
    rr.count_tokens(query_item, document_item, instruction=None) -> TokenCount
    rr.score([p, ...]) -> np.ndarray [n] float32: logit(yes) - logit(no); sigmoid(score) is the relevance
"""

from deployments.engines.qwen3_vl.embedding import Qwen3VLEmbeddingEngine
from deployments.engines.qwen3_vl.inputs import PreparedSide, TokenCount, VLPrepared
from deployments.engines.qwen3_vl.reranker import Qwen3VLRerankerEngine
from deployments.engines.qwen3_vl.templates import (
    EMBEDDING_INSTRUCTION,
    RERANKER_INSTRUCTION,
    RERANKER_SYSTEM,
    normalize_instruction,
)
from deployments.engines.visual_inputs import Video, VideoSampling, VLItem
from deployments.engines.vl_vision import PatchGeometry, VisionLimits, VLInputError

__all__ = [
    "EMBEDDING_INSTRUCTION",
    "RERANKER_INSTRUCTION",
    "RERANKER_SYSTEM",
    "PatchGeometry",
    "PreparedSide",
    "Qwen3VLEmbeddingEngine",
    "Qwen3VLRerankerEngine",
    "TokenCount",
    "VLInputError",
    "VLItem",
    "VLPrepared",
    "Video",
    "VideoSampling",
    "VisionLimits",
    "normalize_instruction",
]
