"""The family registry: one entry per model family, holding everything that makes the family itself.

A family is a recipe. Its entry says what kind of model it is, which engine runs it and in which deployment
shell, and the defaults a model of the family gets when its declaration does not say otherwise: tasks and
instruction-awareness, how an instruction reaches the model (text template or system message), modalities,
outputs, pooling, the matryoshka rule, late chunking (or the exact text that refuses it) and how it reranks.
Catalog entries and user declarations (`family` + `source`) state only what differs.

Nothing else in the code asks for a family or a model by name: the router, the policy and the deployments
read these fields. Adding a family is one entry here plus its engine. Torch-free (the router imports it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["embedding", "rerank"]
Modality = Literal["text", "image", "video"]
Output = Literal["dense", "sparse", "colbert"]
# How a request's instruction reaches the model:
#   text-template:  the input text is rewritten with `query_template` (Qwen3-Embedding)
#   system-message: the engine puts it in the chat template's system turn (Qwen3-VL)
#   judge:          the reranker's judge template carries it (Qwen3-Reranker)
#   none:           the model takes no instruction
InstructionStyle = Literal["text-template", "system-message", "judge", "task-adapter", "none"]
# Which deployment shell serves the family (deployments/shells.py maps these to classes).
Shell = Literal["embedding", "rerank", "remote"]

# The user guide seed's task table, word for word. `*.passage` tasks add no instruction.
TASK_INSTRUCTIONS: dict[str, str | None] = {
    "retrieval.query": "Given a search query, retrieve relevant documents or passages that directly answer or "
    "address the query",
    "retrieval.passage": None,
    "text-matching": "Represent this text for finding semantically similar texts",
    "classification": "Represent this text for classification",
    "separation": "Represent this text for clustering",
    "clustering": "Represent this text for clustering",
    "code.query": "Given a natural language description, retrieve relevant code snippets or implementations",
    "code.passage": None,
    "scientific.query": "Given a scientific question, retrieve relevant research papers or scientific information",
    "qa.query": "Given a question, retrieve passages that contain the answer to the question",
    "bitext": "Represent this text for finding its translation in another language",
    "summarization.query": "Given a summary, retrieve the original document that matches this summary",
}
GUIDE_TASKS = tuple(TASK_INSTRUCTIONS)

# jina-embeddings-v4's tasks as the Jina API names them: adapter (retrieval, text-matching, code) + prompt name.
JINA_V4_TASKS = ("retrieval.query", "retrieval.passage", "text-matching", "code.query", "code.passage")

# Qwen3-Embedding's official query template (no space after `Query:`, unlike the seed's example).
QWEN3_QUERY_TEMPLATE = "Instruct: {instruction}\nQuery:{text}"

# The user guide seed's refusal texts, word for word ({model} is the served model's name).
BGE_M3_LATE_CHUNKING = (
    "Model {model} does not support late_chunking. BGE-M3's architecture causes embedding space collapse when "
    "late chunking is applied. Use jina-embeddings-v4 or voyage-context-3 for contextual embeddings."
)
QWEN3_LATE_CHUNKING = (
    "late_chunking is not supported for {model}. Qwen3 models use last-token pooling, which is incompatible "
    "with late chunking. Use jina-embeddings-v3 or jina-embeddings-v4 for late chunking support."
)
POOLING_LATE_CHUNKING = (
    "late_chunking is not supported for {model}: it needs a mean-pooling model (this one pools with '{pooling}')."
)

QWEN3_RERANKER_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_VL_EMBEDDING_INSTRUCTION = "Represent the user's input."
QWEN3_VL_RERANKER_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."


@dataclass(frozen=True)
class Family:
    name: str
    kind: Kind
    shell: Shell
    engine: str | None  # "module:Class" under deployments.engines, loaded in the replica; None for remote
    summary: str
    # -- recipe defaults (a model's declaration may override each) --
    pooling: Literal["cls", "mean", "last"] | None = None  # None: read from the model's files
    instruction_aware: bool = False
    instruction_style: InstructionStyle = "none"
    query_template: str | None = None  # text-template style: how an instruction and a text become one input
    tasks: tuple[str, ...] = ()
    default_instruction: str | None = None
    modalities: tuple[Modality, ...] = ("text",)
    outputs: tuple[Output, ...] = ("dense",)  # what a model of the family gives by default
    possible_outputs: tuple[Output, ...] = ("dense",)  # what it can give at all
    matryoshka_min: int | None = None  # trained for matryoshka cuts from this size up to its native size
    late_chunking: bool | None = None  # None: allowed exactly for mean pooling
    late_chunking_refusal: str = POOLING_LATE_CHUNKING
    # -- behaviour of the whole family --
    rerank_rule: str = "cosine similarity of embeddings"  # how the model answers /v1/rerank (for /v1/models)
    local_tokenizer: bool = True  # /tokenize, token counts, semantic chunking
    tokenize_refusal: str = "Model {model}: /tokenize covers text models only."
    reads_model_files: bool = True  # facts (max tokens, hidden size, pooling) come from a local model dir
    fallback_capable: bool = False  # may fall back to a text model when it fails on a text-only request
    engine_options: dict = field(default_factory=dict)  # fixed engine settings of the recipe
    # The engine when a model asks for more than dense vectors (an encoder declared with BGE-M3's heads).
    heads_engine: str | None = None

    def engine_for(self, outputs: tuple[str, ...] | list[str]) -> str | None:
        return self.heads_engine if self.heads_engine and set(outputs) - {"dense"} else self.engine

    @property
    def multimodal(self) -> bool:
        return self.modalities != ("text",)

    def allows_late_chunking(self, pooling: str | None) -> bool:
        return self.late_chunking if self.late_chunking is not None else pooling == "mean"


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="encoder",
            kind="embedding",
            shell="embedding",
            engine="text_embedding:TextEmbeddingEngine",
            summary="BERT / XLM-R style encoders; pooling (cls or mean) from the model's sentence-transformers files",
            # An XLM-R encoder declared with `outputs: [dense, sparse, colbert]` carries BGE-M3's heads.
            possible_outputs=("dense", "sparse", "colbert"),
            heads_engine="bge_m3:BGEM3Engine",
        ),
        Family(
            name="bge-m3",
            kind="embedding",
            shell="embedding",
            engine="bge_m3:BGEM3Engine",
            summary="BGE-M3: XLM-R, CLS dense vectors plus the official sparse and ColBERT heads",
            pooling="cls",
            outputs=("dense", "sparse", "colbert"),
            possible_outputs=("dense", "sparse", "colbert"),
            late_chunking=False,
            late_chunking_refusal=BGE_M3_LATE_CHUNKING,
        ),
        Family(
            name="qwen3-embedding",
            kind="embedding",
            shell="embedding",
            engine="text_embedding:TextEmbeddingEngine",
            summary="Qwen3-Embedding: decoder, last-token pooling, instruction-aware queries",
            pooling="last",
            instruction_aware=True,
            instruction_style="text-template",
            query_template=QWEN3_QUERY_TEMPLATE,
            tasks=GUIDE_TASKS,
            matryoshka_min=32,
            late_chunking=False,
            late_chunking_refusal=QWEN3_LATE_CHUNKING,
            engine_options={"padding_side": "left", "required_suffix_token": "<|endoftext|>"},
        ),
        Family(
            name="cross-encoder",
            kind="rerank",
            shell="rerank",
            engine="rerankers:CrossEncoderEngine",
            summary="sequence-classification rerankers (bge-reranker-v2-m3): one relevance logit per pair",
            rerank_rule="cross-encoder: sigmoid of the relevance logit",
        ),
        Family(
            name="qwen3-reranker",
            kind="rerank",
            shell="rerank",
            engine="rerankers:Qwen3RerankerEngine",
            summary="Qwen3-Reranker: causal LM judging yes/no inside the official template",
            instruction_aware=True,
            instruction_style="judge",
            default_instruction=QWEN3_RERANKER_INSTRUCTION,
            rerank_rule="reranker: probability of 'yes' from the judge template",
        ),
        Family(
            name="qwen3-vl-embedding",
            kind="embedding",
            shell="embedding",
            engine="qwen3_vl:Qwen3VLEmbeddingEngine",
            summary="Qwen3-VL-Embedding: text, image, video and mixed inputs, last-token pooling",
            pooling="last",
            instruction_aware=True,
            instruction_style="system-message",
            tasks=GUIDE_TASKS,
            default_instruction=QWEN3_VL_EMBEDDING_INSTRUCTION,
            modalities=("text", "image", "video"),
            matryoshka_min=64,
            late_chunking=False,
            late_chunking_refusal=QWEN3_LATE_CHUNKING,
            local_tokenizer=False,
            fallback_capable=True,
        ),
        Family(
            name="qwen3-vl-reranker",
            kind="rerank",
            shell="rerank",
            engine="qwen3_vl:Qwen3VLRerankerEngine",
            summary="Qwen3-VL-Reranker: multimodal pairs, sigmoid(yes - no) at the last position",
            instruction_aware=True,
            instruction_style="system-message",
            default_instruction=QWEN3_VL_RERANKER_INSTRUCTION,
            modalities=("text", "image", "video"),
            rerank_rule="reranker: sigmoid of the yes - no logits at the last position",
            local_tokenizer=False,
        ),
        Family(
            name="openai-compatible",
            kind="embedding",
            shell="remote",
            engine=None,
            summary="any OpenAI-compatible /v1/embeddings endpoint (OpenRouter, vLLM, TEI, ...)",
            # A remote model declared instruction_aware is taken to be a Qwen3-Embedding served elsewhere.
            instruction_style="text-template",
            query_template=QWEN3_QUERY_TEMPLATE,
            local_tokenizer=False,
            tokenize_refusal=(
                "Model {model} runs behind a remote API: there is no local tokenizer to count its tokens "
                "(its usage comes from the remote's answers)."
            ),
            reads_model_files=False,
        ),
        Family(
            name="jina-v3",
            kind="embedding",
            shell="embedding",
            engine="jina_v3:JinaV3Engine",
            summary="jina-embeddings-v3: rotary XLM-R, five task LoRA adapters picked per input, mean pooling",
            pooling="mean",
            # A task picks one of the model's LoRA adapters (and the model's own prompt, from its config); there
            # is no free-text instruction, so a custom `prompt_name` has nothing to reach (user guide: task
            # adapters yes, custom instructions no). The engine takes the task per input.
            instruction_aware=True,
            instruction_style="task-adapter",
            tasks=("retrieval.query", "retrieval.passage", "separation", "classification", "text-matching"),
            matryoshka_min=32,
            late_chunking=True,
            # Without a task the official model uses no adapter and no prompt (model card: "you can choose not
            # to pass a task, and no specific LoRA adapter will be used"); set a task here to change that.
            engine_options={"default_task": None},
        ),
        Family(
            name="jina-v4",
            kind="embedding",
            shell="embedding",
            engine="jina_v4:JinaV4Engine",
            summary="jina-embeddings-v4: Qwen2.5-VL with three task LoRA adapters picked per input, mean pooling, "
            "text and images, 128-dim multi-vectors",
            pooling="mean",
            # A task picks an adapter (retrieval, text-matching, code) and the official prompt name: *.query and
            # text-matching put "Query: " before the text, *.passage "Passage: " (images take no prefix). There is
            # no free-text instruction (user guide: task adapters yes, custom instructions no).
            instruction_aware=True,
            instruction_style="task-adapter",
            tasks=JINA_V4_TASKS,
            modalities=("text", "image"),
            # Multi-vectors (the official multi_vector_projector, one 128-dim unit vector per token) answer
            # `output: ["colbert"]`, BGE-M3's late-interaction output.
            outputs=("dense", "colbert"),
            possible_outputs=("dense", "colbert"),
            matryoshka_min=128,
            late_chunking=True,
            # The official code refuses to encode without a task; here a request without one gets text-matching:
            # the symmetric adapter, whose vectors compare with each other whatever the inputs' roles are.
            engine_options={"default_task": "text-matching"},
        ),
    )
}


def family_of(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; known families: {', '.join(FAMILIES)}") from None
