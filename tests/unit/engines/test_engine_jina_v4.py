"""jina-embeddings-v4 engine on a tiny checkpoint in the official layout, against a reference written here.

The reference follows the official recipe (modeling_jina_embeddings_v4.py, custom_lora_module.py, the adapters'
PEFT config) with stock transformers pieces and nothing from the engine: the safetensors files are read here,
the task's LoRA pair is merged into every adapted weight (W + B_t @ A_t * alpha / r, the projector included)
and loaded into transformers' own Qwen2_5_VLModel; text is tokenized by the checkpoint's tokenizer as
"{Query|Passage}: {text}" (text-matching always "Query"); an image goes through transformers'
Qwen2VLImageProcessorPil with the checkpoint's pixel range and the official prompt, "<|image_pad|>" expanded to
the image's token count; the single vector is the mean over all tokens (text) or <|vision_start|> ..
<|vision_end|> (image), L2-normalized; the multi-vectors are the merged projector's rows, L2-normalized.
Each input runs alone (no padding), one task at a time.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.tiny_jina_v4 import ALPHA, RANK, build_tiny_jina_v4
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLModel, Qwen2VLImageProcessorPil

from deployments.engines.jina_v4 import JinaV4Engine, V4Item
from deployments.engines.postprocess import finalize_rows
from deployments.engines.protocol import EmbeddingEngine, EngineOptions, InputError
from deployments.engines.visual_inputs import VLItem

TEXTS = [
    "hello world",
    "Follow the white rabbit.",
    "def add(a, b):\n    return a + b",
    "x",
    "The quick brown fox jumps over the lazy dog, and the dog was lazy. Query: not a prefix",
]
TASKS = ["retrieval.query", "retrieval.passage", "text-matching", "code.query", "code.passage"]
ADAPTER = {"retrieval.query": "retrieval", "retrieval.passage": "retrieval", "text-matching": "text-matching"}
ADAPTER |= {"code.query": "code", "code.passage": "code"}
PREFIX = {"retrieval.query": "Query", "retrieval.passage": "Passage", "text-matching": "Query"}
PREFIX |= {"code.query": "Query", "code.passage": "Passage"}
COS = 0.9999


def cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def picture(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(0, 255, w * h * 3).reshape(h, w, 3)
    return Image.fromarray(((base + rng.integers(0, 60, (h, w, 3))) % 256).astype(np.uint8))


@pytest.fixture(scope="module")
def jina_dir(tmp_path_factory):
    return build_tiny_jina_v4(tmp_path_factory.mktemp("jina-v4") / "model", seed=5)


@pytest.fixture(scope="module")
def engine(jina_dir):
    torch.set_num_threads(1)
    return JinaV4Engine(str(jina_dir))


@pytest.fixture(scope="module")
def reference(jina_dir):
    return Reference(jina_dir)


class Reference:
    """The official recipe with stock transformers: weights merged per task, one input at a time."""

    def __init__(self, path) -> None:
        raw = json.loads((path / "config.json").read_text())
        self.config = Qwen2_5_VLConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "auto_map")})
        self.config._attn_implementation = "eager"
        index = json.loads((path / "model.safetensors.index.json").read_text())
        base: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            base.update(load_file(str(path / shard)))
        self.base = base
        adapter_cfg = json.loads((path / "adapters" / "adapter_config.json").read_text())
        assert (adapter_cfg["r"], adapter_cfg["lora_alpha"]) == (RANK, ALPHA)
        self.scaling = adapter_cfg["lora_alpha"] / adapter_cfg["r"]
        self.adapters = load_file(str(path / "adapters" / "adapter_model.safetensors"))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        pre = json.loads((path / "preprocessor_config.json").read_text())
        self.processor = Qwen2VLImageProcessorPil(
            patch_size=pre["patch_size"],
            merge_size=pre["merge_size"],
            temporal_patch_size=pre["temporal_patch_size"],
            image_mean=pre["image_mean"],
            image_std=pre["image_std"],
            min_pixels=pre["min_pixels"],
            max_pixels=pre["max_pixels"],
        )
        self.vocab = self.tokenizer.get_vocab()
        self._models: dict[str, tuple[Qwen2_5_VLModel, torch.nn.Linear]] = {}

    def model(self, adapter: str) -> tuple[Qwen2_5_VLModel, torch.nn.Linear]:
        """Qwen2_5_VLModel + projector with the adapter's LoRA merged into the weights (PEFT's merge rule)."""
        if adapter in self._models:
            return self._models[adapter]
        state = {}
        for name, value in self.base.items():
            if name.startswith("visual."):
                state[name] = value
            elif name.startswith("model."):
                state["language_model." + name[len("model.") :]] = value
        projector = {
            "weight": self.base["multi_vector_projector.weight"],
            "bias": self.base["multi_vector_projector.bias"],
        }
        for key, a in self.adapters.items():
            if ".lora_A." not in key or not key.endswith(f".lora_A.{adapter}.weight"):
                continue
            b = self.adapters[key.replace(".lora_A.", ".lora_B.")]
            module = key[len("base_model.model.") : -len(f".lora_A.{adapter}.weight")]
            delta = (b.double() @ a.double() * self.scaling).float()
            if module == "multi_vector_projector":
                projector["weight"] = projector["weight"] + delta
            else:
                name = module[len("model.") :] + ".weight"  # model.language_model.* -> language_model.*
                state[name] = state[name] + delta
        model = Qwen2_5_VLModel(self.config).eval()
        model.load_state_dict(state, strict=True)
        proj = torch.nn.Linear(*reversed(projector["weight"].shape))
        proj.load_state_dict(projector)
        self._models[adapter] = (model, proj)
        return model, proj

    def text_ids(self, text: str, task: str) -> list[int]:
        return self.tokenizer(f"{PREFIX[task]}: {text}", add_special_tokens=True)["input_ids"]

    @torch.no_grad()
    def run(self, ids: list[int], adapter: str, pixels=None, grid=None) -> tuple[torch.Tensor, torch.Tensor]:
        model, proj = self.model(adapter)
        input_ids = torch.tensor([ids])
        kwargs = {}
        if pixels is not None:
            kwargs = {
                "pixel_values": pixels,
                "image_grid_thw": grid[None],
                "mm_token_type_ids": (input_ids == self.vocab["<|image_pad|>"]).long(),
            }
        model.rope_deltas = None
        hidden = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False, **kwargs)
        hidden = hidden.last_hidden_state[0]
        return hidden, torch.nn.functional.normalize(proj(hidden), dim=-1)

    def text(self, text: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        hidden, multi = self.run(self.text_ids(text, task), ADAPTER[task])
        dense = torch.nn.functional.normalize(hidden.mean(dim=0), dim=-1)
        return dense.numpy(), multi.numpy()

    def image_inputs(self, img: Image.Image) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        out = self.processor(images=[img], return_tensors="pt")
        grid = out["image_grid_thw"][0]
        n = int(grid.prod()) // 4
        prompt = (
            "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>Describe the image.<|im_end|>\n"
        )
        return self.tokenizer(prompt)["input_ids"], out["pixel_values"], grid

    def image(self, img: Image.Image, task: str) -> tuple[np.ndarray, np.ndarray]:
        ids, pixels, grid = self.image_inputs(img)
        hidden, multi = self.run(ids, ADAPTER[task], pixels, grid)
        t = torch.tensor(ids)
        start = int((t == self.vocab["<|vision_start|>"]).nonzero()[0])
        end = int((t == self.vocab["<|vision_end|>"]).nonzero()[0])
        dense = torch.nn.functional.normalize(hidden[start : end + 1].mean(dim=0), dim=-1)
        return dense.numpy(), multi.numpy()


def dense_of(engine, items) -> np.ndarray:
    return finalize_rows(np.stack([o.dense for o in engine.forward(items)]), None, True)


# ---- tokens --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_token_ids_follow_the_official_prefixes(engine, reference, task):
    for text in TEXTS:
        assert engine.token_ids([text], task=task)[0] == reference.text_ids(text, task)
    assert engine.prompt_of(task) == f"{PREFIX[task]}: "


def test_tasks_and_default(engine):
    assert list(engine.tasks) == TASKS
    assert engine.default_task == "text-matching"
    assert engine.prepare(["hello"])[0].ids == engine.prepare(["hello"], task="text-matching")[0].ids


def test_image_tokens_match_the_processor(engine, reference):
    img = picture(1, (90, 70))
    item = engine.prepare([VLItem(images=(img,))], task="retrieval.passage")[0]
    ids, _, _ = reference.image_inputs(img)
    assert item.ids == ids
    assert item.ids[item.pool_start] == reference.vocab["<|vision_start|>"]
    assert item.ids[item.pool_end - 1] == reference.vocab["<|vision_end|>"]


# ---- vectors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_each_task_matches_the_reference(engine, reference, task):
    items = engine.prepare(TEXTS, task=task)
    outputs = engine.forward(items)
    dense = finalize_rows(np.stack([o.dense for o in outputs]), None, True)
    for i, text in enumerate(TEXTS):
        ref_dense, ref_multi = reference.text(text, task)
        assert cos(dense[i], ref_dense) >= COS, (task, text)
        assert outputs[i].colbert.shape == ref_multi.shape
        row_cos = [cos(a, b) for a, b in zip(outputs[i].colbert, ref_multi, strict=True)]
        assert min(row_cos) >= COS, (task, text, min(row_cos))
        assert np.allclose(np.linalg.norm(outputs[i].colbert, axis=1), 1.0, atol=1e-5)


def test_a_batch_may_mix_tasks(engine, reference):
    """One forward pass, a different adapter per row (and padding): each row equals its own task's reference."""
    tasks = [TASKS[i % len(TASKS)] for i in range(len(TEXTS))]
    items = engine.prepare(TEXTS, task=tasks)
    assert len({len(i) for i in items}) > 1  # rows of different lengths: right padding is exercised
    outputs = engine.forward(items)
    for i, (text, task) in enumerate(zip(TEXTS, tasks, strict=True)):
        ref_dense, ref_multi = reference.text(text, task)
        assert cos(outputs[i].dense, ref_dense) >= COS, (task, text)
        assert min(cos(a, b) for a, b in zip(outputs[i].colbert, ref_multi, strict=True)) >= COS


def test_adapters_change_the_vectors(engine):
    """Different adapters (and prompts) give different vectors: the LoRA pairs are really applied."""
    vecs = {t: dense_of(engine, engine.prepare(["hello world"], task=t))[0] for t in TASKS}
    assert cos(vecs["retrieval.query"], vecs["code.query"]) < 0.99
    assert cos(vecs["retrieval.query"], vecs["text-matching"]) < 0.99
    assert cos(vecs["retrieval.query"], vecs["retrieval.passage"]) < 0.999


def test_image_matches_the_reference(engine, reference):
    images = [picture(2, (90, 70)), picture(3, (56, 120))]
    items = engine.prepare(
        [VLItem(images=(images[0],)), "a text between", VLItem(images=(images[1],))], task="code.query"
    )
    outputs = engine.forward(items)
    for img, out in ((images[0], outputs[0]), (images[1], outputs[2])):
        ref_dense, ref_multi = reference.image(img, "code.query")
        assert cos(out.dense, ref_dense) >= COS
        assert out.colbert.shape == ref_multi.shape
        assert min(cos(a, b) for a, b in zip(out.colbert, ref_multi, strict=True)) >= COS
    ref_text, _ = reference.text("a text between", "code.query")
    assert cos(outputs[1].dense, ref_text) >= COS


def test_late_chunking_matches_the_reference(engine, reference):
    chunks = ["The cat sat on the mat.", " It was warm", " and the dog slept outside."]
    vectors, counts = engine.late_chunk(chunks, "retrieval.passage")
    # The reference: "Passage: " + chunk 0 tokenized together, later chunks on their own, one forward pass; the
    # prefix's tokens belong to no chunk.
    tok = reference.tokenizer
    joined = tok(f"Passage: {chunks[0]}", return_offsets_mapping=True)
    first = joined["input_ids"]
    head = sum(1 for _, end in joined["offset_mapping"] if end <= len("Passage: "))  # the prefix's tokens
    pieces = [first[head:], *(tok(c)["input_ids"] for c in chunks[1:])]
    ids = first[:head] + [t for p in pieces for t in p]
    hidden, _ = reference.run(ids, "retrieval")
    offset = head
    for i, piece in enumerate(pieces):
        assert cos(vectors[i], hidden[offset : offset + len(piece)].mean(dim=0)) >= COS
        offset += len(piece)
    assert sum(counts) == len(ids)


def test_late_chunking_windows_cover_long_documents(jina_dir, engine):
    """Past the limit, windows overlap by a quarter; every chunk still gets a vector from its own tokens."""
    small = JinaV4Engine(str(jina_dir), max_tokens=16)
    chunks = [f"chunk number {i} says hello." for i in range(6)]
    vectors, counts = small.late_chunk(chunks, "text-matching")
    assert vectors.shape == (6, engine.dimensions) and np.isfinite(vectors).all()
    assert all(np.linalg.norm(v) > 0 for v in vectors)
    assert sum(counts) > sum(len(engine.backend.encode(c).ids) for c in chunks)  # overlaps are counted


# ---- loading -------------------------------------------------------------------------------------------


def test_module_layout_checkpoint_loads_the_same(tmp_path, engine):
    """Base weights saved under the module names (model.language_model.*, model.visual.*) load to the same model."""
    other = JinaV4Engine(str(build_tiny_jina_v4(tmp_path / "m", seed=5, module_layout=True)))
    a = dense_of(engine, engine.prepare(TEXTS, task="code.passage"))
    b = dense_of(other, other.prepare(TEXTS, task="code.passage"))
    assert np.allclose(a, b, atol=1e-6)


def test_load_through_the_protocol(jina_dir):
    options = EngineOptions(outputs=("dense",), recipe={"default_task": "retrieval.passage"})
    eng = JinaV4Engine.load(str(jina_dir), options)
    assert isinstance(eng, EmbeddingEngine)
    assert eng.capabilities.outputs == ("dense",) and eng.capabilities.late_chunking
    assert eng.forward(eng.prepare(["hello"]))[0].colbert is None
    assert eng.prepare(["hello"])[0].ids == eng.prepare(["hello"], task="retrieval.passage")[0].ids
    full = JinaV4Engine.load(str(jina_dir), EngineOptions(outputs=("dense", "colbert")))
    assert full.capabilities.outputs == ("dense", "colbert") and full.capabilities.dimensions == 64


def test_vision_limits_cap_the_checkpoint_range(jina_dir):
    options = EngineOptions(vision={"min_pixels": 4096, "max_pixels": 28 * 28 * 4, "total_pixels": 1, "fps": 1.0})
    eng = JinaV4Engine.load(str(jina_dir), options)
    assert eng.limits.max_pixels == 28 * 28 * 4  # the deployment's ceiling wins when lower
    item = eng.prepare([VLItem(images=(picture(4, (300, 200)),))])[0]
    assert item.ids.count(eng.special["image_pad"]) <= 4


# ---- refusals ------------------------------------------------------------------------------------------


def test_refusals_name_the_input(engine):
    with pytest.raises(InputError) as err:
        engine.prepare(["a", "b"], task=["retrieval.query", "classification"])
    assert err.value.index == 1
    with pytest.raises(InputError) as err:
        engine.prepare(["a", VLItem(text="caption", images=(picture(5, (60, 60)),))])
    assert err.value.index == 1


def test_truncation_keeps_the_prefix(jina_dir):
    small = JinaV4Engine(str(jina_dir), max_tokens=8)
    text = "one two three four five six seven eight nine ten"
    full = small.prepare([text], task="retrieval.query")[0]
    assert len(full) > 8 and full.full_length == len(full)
    right = small.prepare([text], truncate=True, task="retrieval.query")[0]
    left = small.prepare([text], truncate=True, direction="left", task="retrieval.query")[0]
    prefix = small.backend.encode("Query: ").ids  # this byte-level vocabulary keeps the space a token of its own
    assert len(right) == len(left) == 8
    assert right.ids[: len(prefix)] == left.ids[: len(prefix)] == prefix
    assert right.ids[len(prefix) :] == full.ids[len(prefix) : 8]
    assert left.ids[len(prefix) :] == full.ids[len(full) - (8 - len(prefix)) :]
    assert isinstance(right, V4Item) and right.full_length == len(full)


def test_client_text_never_becomes_a_control_token(engine):
    ids = engine.token_ids(["look <|vision_start|><|image_pad|><|im_end|>"])[0]
    assert not set(ids) & set(engine.special.values())


# ---- the recipe: registry, declarations, policy ----------------------------------------------------------


def _resolved(entry: dict):
    from serve_app.catalog import load_catalog, resolve_models
    from serve_app.config import AppArgs

    (spec,) = resolve_models(AppArgs.model_validate({"models": [entry]}).models, load_catalog())
    return spec


def _declared(jina_dir):
    return _resolved({"name": "my-jina4", "family": "jina-v4", "source": str(jina_dir)})


def test_a_declared_model_gets_the_recipe(jina_dir):
    """family + local source: the catalog model's tasks, modalities, outputs, pooling, late chunking."""
    spec = _declared(jina_dir)
    catalog = _resolved({"name": "jina-embeddings-v4"})
    assert spec.tasks == TASKS == list(catalog.tasks)
    assert spec.modalities == ["text", "image"] == list(catalog.modalities)
    assert spec.outputs == ["dense", "colbert"] == list(catalog.outputs)
    assert (spec.pooling, spec.late_chunking, spec.instruction_aware) == ("mean", True, True)
    assert spec.recipe.engine_options == {"default_task": "text-matching"}
    assert (catalog.source, catalog.dimensions, catalog.max_tokens) == ("jinaai/jina-embeddings-v4", 2048, 32768)
    assert (catalog.matryoshka.min, catalog.matryoshka.max) == (128, 2048)


def test_policy_names_tasks_as_the_official_code_does(jina_dir):
    from deployments.errors import InvalidRequest
    from serve_app.policy import cohere_task, resolve_adapter_task

    spec = _declared(jina_dir)
    assert resolve_adapter_task(spec, "retrieval", "passage") == "retrieval.passage"
    assert resolve_adapter_task(spec, "code", None) == "code.query"  # encode_text's default prompt name
    assert resolve_adapter_task(spec, "text-matching", "passage") == "text-matching"
    assert resolve_adapter_task(spec, None, "code.passage") == "code.passage"
    assert resolve_adapter_task(spec, None, None) is None  # the engine's default task
    for task, prompt in (("retrieval", "Represent this"), ("classification", None), (None, "Represent this")):
        with pytest.raises(InvalidRequest):
            resolve_adapter_task(spec, task, prompt)
    assert cohere_task(spec, "search_query") == "retrieval.query"
    assert cohere_task(spec, "search_document") == "retrieval.passage"
    assert cohere_task(spec, "classification") is None  # no such adapter: the default task


def test_adapter_files_are_read_strictly(tmp_path):
    """rsLoRA scaling from adapter_config.json; a task without its pair, or a missing base tensor, refuses to load."""
    from safetensors.torch import save_file

    path = build_tiny_jina_v4(tmp_path / "m", seed=1)
    cfg_path = path / "adapters" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "use_rslora": True}))
    eng = JinaV4Engine(str(path))
    assert eng.model.multi_vector_projector.scaling == pytest.approx(ALPHA / RANK**0.5)
    cfg_path.write_text(json.dumps(cfg))

    adapters = path / "adapters" / "adapter_model.safetensors"
    original = load_file(str(adapters))
    save_file({k: v for k, v in original.items() if ".code." not in k or "layers.1.mlp" not in k}, str(adapters))
    with pytest.raises(ValueError, match="lacks lora_A for code"):
        JinaV4Engine(str(path))
    save_file(original, str(adapters))

    index = json.loads((path / "model.safetensors.index.json").read_text())
    shard = path / index["weight_map"]["multi_vector_projector.bias"]
    tensors = load_file(str(shard))
    save_file({k: v for k, v in tensors.items() if k != "multi_vector_projector.bias"}, str(shard))
    with pytest.raises(ValueError, match="lacks 1 parameters"):
        JinaV4Engine(str(path))
