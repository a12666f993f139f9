"""The model spec: everything the router and a model deployment need to know about one served model.

It is the contract between the two layers, so it lives here, below the HTTP face. A spec names its family;
every recipe field it leaves out (None) is filled from the family registry when the spec is validated, so a
model declared by `family` + `source` behaves like the catalog's models of that family.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deployments.families import FAMILIES, Family, Kind, Modality, Output, family_of


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
    coalesce_calls: bool | None = Field(
        None,
        description="the router sends concurrent calls for this model as one downstream call (default: on when "
        "the replica count is fixed; off under autoscaling, whose policy counts ongoing calls, not requests)",
    )
    access_log: bool = Field(
        False,
        description="Serve's INFO line per request (off by default: on a busy replica it is a measurable share "
        "of the per-request CPU, and every line travels to the driver's log)",
    )

    def coalesces(self) -> bool:
        if self.coalesce_calls is not None:
            return self.coalesce_calls
        a = self.autoscaling_config
        if a is not None:
            return a.get("min_replicas") is not None and a.get("min_replicas") == a.get("max_replicas")
        return self.num_replicas != "auto"


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
    """One served model. Recipe fields left None take the family's default (deployments/families.py)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    family: str = Field(description=f"one of: {', '.join(FAMILIES)}")
    source: str = Field(description="HF id, local directory, or package:<module>")
    kind: Kind | None = None
    max_tokens: int | None = Field(None, ge=1)
    dimensions: int | None = Field(None, ge=1, description="native output dimension")
    matryoshka: MatryoshkaRange | None = None
    default_dimensions: int | None = Field(None, ge=1)
    pooling: Literal["cls", "mean", "last"] | None = None
    tasks: list[str] | None = None
    instruction_aware: bool | None = None
    late_chunking: bool | None = None
    modalities: list[Modality] | None = None
    outputs: list[Output] | None = Field(None, description="BGE-M3: dense, sparse and colbert (needs the heads)")
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

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        family_of(value)
        return value

    @model_validator(mode="after")
    def _apply_family(self) -> ModelSpec:
        """Fill every recipe field the declaration left out from the family; refuse what the family cannot do."""
        fam = self.recipe
        if self.kind is None:
            self.kind = fam.kind
        if self.pooling is None:
            self.pooling = fam.pooling
        if self.instruction_aware is None:
            self.instruction_aware = fam.instruction_aware
        if self.tasks is None:
            self.tasks = list(fam.tasks) if self.instruction_aware else []
        if self.default_instruction is None:
            self.default_instruction = fam.default_instruction
        if self.modalities is None:
            self.modalities = list(fam.modalities)
        if self.outputs is None:
            self.outputs = list(fam.outputs)
        if self.late_chunking is None:
            self.late_chunking = fam.allows_late_chunking(self.pooling)
        if self.matryoshka is None and fam.matryoshka_min is not None and self.dimensions is not None:
            self.matryoshka = MatryoshkaRange(min=min(fam.matryoshka_min, self.dimensions), max=self.dimensions)
        if self.matryoshka and self.matryoshka.min > self.matryoshka.max:
            raise ValueError(f"{self.name}: matryoshka.min > matryoshka.max")
        extra_outputs = set(self.outputs) - set(fam.possible_outputs)
        if extra_outputs:
            raise ValueError(
                f"{self.name}: family {fam.name} gives only {', '.join(fam.possible_outputs)} "
                f"(asked for {', '.join(sorted(extra_outputs))})"
            )
        extra_media = set(self.modalities) - set(fam.modalities)
        if extra_media:
            raise ValueError(f"{self.name}: family {fam.name} takes {', '.join(fam.modalities)} only")
        return self

    @property
    def recipe(self) -> Family:
        return FAMILIES[self.family]

    def dimension_range(self) -> tuple[int, int] | None:
        """Allowed `dimensions` values; a model without matryoshka training allows only its native size."""
        if self.matryoshka:
            return self.matryoshka.min, self.matryoshka.max
        if self.dimensions:
            return self.dimensions, self.dimensions
        return None

    def late_chunking_refusal(self) -> str | None:
        """The exact text that refuses late chunking for this model (the seed's, per family), or None."""
        if self.late_chunking:
            return None
        return self.recipe.late_chunking_refusal.format(model=self.name, pooling=self.pooling or "its own rule")
