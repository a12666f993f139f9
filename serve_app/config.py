"""Shapes of the configuration: the model catalog and a Serve application's `args`.

A model in `args.models` either names a catalog entry (`- name: bge-m3`) and optionally overrides some
of its fields, or declares a new one (`name`, `family`, `source`); whatever a declared model leaves
out that its files state (max tokens, hidden size, pooling) is read from those files.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Family = Literal[
    "encoder",
    "qwen3-embedding",
    "cross-encoder",
    "qwen3-reranker",
    "qwen3-vl-embedding",
    "qwen3-vl-reranker",
    "openai-compatible",
]
Kind = Literal["embedding", "rerank"]
Modality = Literal["text", "image", "video"]

FAMILY_KIND: dict[str, Kind] = {
    "encoder": "embedding",
    "qwen3-embedding": "embedding",
    "qwen3-vl-embedding": "embedding",
    "openai-compatible": "embedding",
    "cross-encoder": "rerank",
    "qwen3-reranker": "rerank",
    "qwen3-vl-reranker": "rerank",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class BatchingConfig(_Strict):
    """`@serve.batch` settings; live-updatable through the deployment's user_config."""

    max_batch_tokens: int = Field(16384, ge=1, description="token budget of one batch (padded tokens)")
    max_batch_size: int = Field(64, ge=1, description="most inputs in one batch")
    batch_wait_timeout_s: float = Field(
        0.0,
        ge=0,
        description="how long Serve waits to fill a batch; 0 suits a busy model, as arrivals during a forward "
        "pass are merged into the next one anyway",
    )
    max_concurrent_batches: int = Field(
        4,
        ge=1,
        description="Serve's batch slots; a batch only hands its items over to the model's queue, so a few suffice",
    )


class DeploymentConfig(_Strict):
    """Per-model Ray Serve options."""

    num_replicas: int | Literal["auto"] | None = None
    autoscaling_config: dict[str, Any] | None = None
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    torch_threads: int | None = Field(None, ge=1, description="default: the replica's num_cpus (at least 1)")
    max_ongoing_requests: int | None = Field(None, ge=1, description="default: sized so batches can fill")
    max_queued_requests: int = Field(-1, description="-1: unbounded")
    health_check_period_s: float | None = None
    health_check_timeout_s: float | None = None
    graceful_shutdown_timeout_s: float | None = None


class VisionConfig(_Strict):
    """Per-model vision budget for Qwen3-VL models (defaults: the embedding model stack seed)."""

    min_pixels: int = Field(4096, ge=1)
    max_pixels: int = Field(1_843_200, ge=1)
    total_pixels: int = Field(7_864_320, ge=1, description="pixel budget of one video")
    fps: float = Field(1.0, gt=0)
    max_frames: int = Field(64, ge=2)
    max_batch_patches: int = Field(65536, ge=1, description="vision-tower patches in one micro-batch")


class MatryoshkaRange(_Strict):
    min: int = Field(ge=1)
    max: int = Field(ge=1)


class ModelSpec(_Strict):
    """Everything the router and a model deployment need to know about one served model."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    family: Family
    source: str = Field(description="HF id, local directory, or package:<module>")
    kind: Kind | None = None
    max_tokens: int | None = Field(None, ge=1)
    dimensions: int | None = Field(None, ge=1, description="native output dimension")
    matryoshka: MatryoshkaRange | None = None
    default_dimensions: int | None = Field(None, ge=1)
    pooling: Literal["cls", "mean", "last"] | None = None
    tasks: list[str] = Field(default_factory=list)
    instruction_aware: bool = False
    late_chunking: bool = False
    modalities: list[Modality] = Field(default_factory=lambda: ["text"])
    outputs: list[Literal["dense", "sparse", "colbert"]] = Field(
        default_factory=lambda: ["dense"], description="BGE-M3: also sparse and colbert (needs the official heads)"
    )
    default_instruction: str | None = None
    fallback: str | None = None
    vision: VisionConfig = Field(default_factory=VisionConfig)
    description: str | None = None
    dtype: str | None = None
    device: str | None = None
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)

    @model_validator(mode="after")
    def _fill_kind(self) -> ModelSpec:
        if self.kind is None:
            self.kind = FAMILY_KIND[self.family]
        if self.matryoshka and self.matryoshka.min > self.matryoshka.max:
            raise ValueError(f"{self.name}: matryoshka.min > matryoshka.max")
        return self

    def dimension_range(self) -> tuple[int, int] | None:
        """Allowed `dimensions` values; a model without matryoshka training allows only its native size."""
        if self.matryoshka:
            return self.matryoshka.min, self.matryoshka.max
        if self.dimensions:
            return self.dimensions, self.dimensions
        return None


class Limits(_Strict):
    """Request limits, checked in the router before anything is queued (413 when exceeded)."""

    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_inputs_per_request: int = Field(2048, ge=1)
    max_chars_per_input: int = Field(200_000, ge=1)
    max_documents_per_request: int = Field(1000, ge=1)


class AuthConfig(_Strict):
    """Bearer API keys. Keys come from `api_keys` and/or the comma-separated env var `api_keys_env`
    (read by the router replica, so set it in the Serve config's runtime_env or the cluster's environment).
    No keys at all: the API is open."""

    api_keys: list[str] = Field(default_factory=list)
    api_keys_env: str | None = "EMBEDSERVE_API_KEYS"


class ModelEntry(BaseModel):
    """One item of `args.models`: a catalog name plus overrides, or a full declaration."""

    model_config = ConfigDict(extra="allow")
    name: str


class AppArgs(_Strict):
    """The `args` of the Serve application (`import_path: serve_app.app:build_app`)."""

    models: list[ModelEntry] = Field(min_length=1)
    catalog: str | None = Field(None, description="catalog YAML; default configs/models.yaml")
    router: DeploymentConfig = Field(default_factory=lambda: DeploymentConfig(num_cpus=0))
    limits: Limits = Field(default_factory=lambda: Limits())
    auth: AuthConfig = Field(default_factory=lambda: AuthConfig())
    request_timeout_s: float = Field(60.0, gt=0, description="router-side deadline per request (504 after)")
