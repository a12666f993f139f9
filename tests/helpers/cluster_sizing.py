"""The GPU sizing arithmetic of configs/gpu-single.yaml and configs/gpu-cluster.yaml, as code.

The configs write this arithmetic down as comments; tests/unit/serve_app/test_manifests.py recomputes every
`num_gpus` from here, so a comment, a fraction and a batch budget cannot disagree. Model facts are from the official
model configs (hidden / intermediate sizes) and the product seeds / model cards (parameter counts).

    weights      W = params x 2 bytes (bf16)
    activations  A = tokens x 2 bytes x (6 x hidden + 3 x intermediate)
                 tokens = max(max_batch_tokens, max_tokens): a batch is cut into micro-batches of at most
                 max_batch_tokens padded tokens, but one input of up to max_tokens runs whole.
                 Per token, inference keeps one layer's transients alive at a time: residual, norm and
                 attention q/k/v/out (~6 x hidden) and the MLP's up / gate / activation (~3 x intermediate);
                 flash / sdpa attention stores no tokens x tokens scores.
    vision (VL)  V = 15,360 patches x 2 bytes x (6 x vision hidden + 3 x vision intermediate): one item at the
                 seed's largest pixel budget, total_video_pixels 7,864,320 / (16 x 16 patch x 2 frames)
    context      C = 0.5 GiB per process (CUDA context, kernels): outside the allocator cap, inside the fraction
    fraction     num_gpus = ceil((W + A + V + C) / 79 GiB, to 0.001); 79 GiB is what an 80 GB card reports
                 (about 79.2 GiB), rounded down. A replica caps its CUDA allocator at num_gpus x the card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 2**30
CARD_GIB = 79.0
CONTEXT_GIB = 0.5
BF16_BYTES = 2
VIDEO_PATCHES = 7_864_320 // (16 * 16 * 2)  # 15,360


@dataclass(frozen=True)
class Arch:
    params_b: float  # parameters, billions
    hidden: int
    intermediate: int
    vision: tuple[int, int] | None = None  # (hidden, intermediate) of the vision tower


XLMR_LARGE = (1024, 4096)
QWEN3_0_6B = (1024, 3072)

ARCH: dict[str, Arch] = {
    "bge-m3": Arch(0.568, *XLMR_LARGE),
    "bge-reranker-v2-m3": Arch(0.568, *XLMR_LARGE),
    "qwen3-embedding-0.6b": Arch(0.596, *QWEN3_0_6B),
    "qwen3-reranker-0.6b": Arch(0.596, *QWEN3_0_6B),
    "qwen3-embedding-4b": Arch(4.02, 2560, 9728),
    "qwen3-embedding-8b": Arch(7.57, 4096, 12288),
    "qwen3-vl-embedding-2b": Arch(2.13, 2048, 6144, vision=(1024, 4096)),
    "qwen3-vl-reranker-2b": Arch(2.13, 2048, 6144, vision=(1024, 4096)),
    "qwen3-vl-embedding-8b": Arch(8.14, 4096, 12288, vision=(1152, 4304)),
    "qwen3-vl-reranker-8b": Arch(8.14, 4096, 12288, vision=(1152, 4304)),
    # jina-embeddings-v3: XLM-R large + five adapters (model card: 572M); v4: Qwen2.5-VL-3B (3.75e9) + three
    # r=32 adapters on q/k/v/o/gate/up/down of 36 layers (60M each) = 3.93e9, vision tower 1280 / 3420.
    "jina-embeddings-v3": Arch(0.572, *XLMR_LARGE),
    "jina-embeddings-v4": Arch(3.93, 2048, 11008, vision=(1280, 3420)),
}

# The models the two product seeds ask to be served (both seed documents), all in configs/models.yaml.
SEED_MODELS = tuple(ARCH)
# configs/gpu-single.yaml packs these on one 80 GB card; the jina models do not fit beside them (its header).
SINGLE_CARD_MODELS = tuple(name for name in ARCH if not name.startswith("jina-"))


def per_token_bytes(hidden: int, intermediate: int) -> int:
    return BF16_BYTES * (6 * hidden + 3 * intermediate)


@dataclass(frozen=True)
class Sizing:
    weights_gib: float
    tokens: int
    activations_gib: float
    vision_gib: float
    need_gib: float
    num_gpus: float


def size(name: str, max_tokens: int, max_batch_tokens: int) -> Sizing:
    arch = ARCH[name]
    weights = arch.params_b * 1e9 * BF16_BYTES / GIB
    tokens = max(max_tokens, max_batch_tokens)
    activations = tokens * per_token_bytes(arch.hidden, arch.intermediate) / GIB
    vision = VIDEO_PATCHES * per_token_bytes(*arch.vision) / GIB if arch.vision else 0.0
    need = weights + activations + vision + CONTEXT_GIB
    num_gpus = math.ceil(round(need / CARD_GIB * 1000, 6)) / 1000
    return Sizing(weights, tokens, activations, vision, need, num_gpus)
