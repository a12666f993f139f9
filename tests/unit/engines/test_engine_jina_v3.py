"""jina-embeddings-v3 engine on a tiny checkpoint in the official layout, against a reference written here.

The reference follows the official recipe step by step, one input at a time, in float64, reading the
safetensors file itself: the task's prompt in front of the text, the task's adapter merged into every weight
(Linear: W + B_t @ A_t * alpha / r, Embedding: W + A_t @ B_t * alpha / r, no adapter without a task), word +
token-type embeddings and LayerNorm, then per layer Wqkv -> [q | k | v], rotary (base 20000, halves) on q and
k position by position, softmax attention, out_proj, post-norm, GELU MLP, post-norm; mean over the tokens.
transformers' own JinaEmbeddingsV3Model (no hub code) with the merged weights is a second, independent check.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers.tiny_jina_v3 import TASK_INSTRUCTIONS, TASKS, build_tiny_jina_v3
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from deployments.engines.jina_v3 import AdapterTokens, JinaV3Engine
from deployments.engines.postprocess import finalize_rows
from deployments.engines.protocol import EmbeddingEngine, EngineOptions, InputError

TEXTS = [
    "hello world",
    "Follow the white rabbit.",
    "The quick brown fox jumps over the lazy dog, and the dog was lazy.",
    "x",
    "search engine: a long text embedding model with a task adapter for late chunking of long text",
]
COS = 0.999


@pytest.fixture(scope="module")
def jina_dir(tmp_path_factory):
    return build_tiny_jina_v3(tmp_path_factory.mktemp("jina-v3") / "model", seed=5)


@pytest.fixture(scope="module")
def engine(jina_dir):
    torch.set_num_threads(1)
    return JinaV3Engine(str(jina_dir))


@pytest.fixture(scope="module")
def reference(jina_dir):
    return Reference(jina_dir)


class Reference:
    """The official recipe, written out plainly: one input at a time, weights merged per task, float64."""

    def __init__(self, path) -> None:
        self.cfg = json.loads((path / "config.json").read_text())
        self.tensors = {k: v.double() for k, v in load_file(str(path / "model.safetensors")).items()}
        self.tokenizer = AutoTokenizer.from_pretrained(path)

    def ids(self, text: str, task: str | None) -> list[int]:
        prompt = self.cfg["task_instructions"][task] if task else ""
        return self.tokenizer(prompt + text)["input_ids"]

    def weight(self, module: str, task: str | None, embedding: bool = False) -> torch.Tensor:
        w = self.tensors[f"roberta.{module}.parametrizations.weight.original"]
        if task is None:
            return w
        i = self.cfg["lora_adaptations"].index(task)
        a = self.tensors[f"roberta.{module}.parametrizations.weight.0.lora_A"][i]
        b = self.tensors[f"roberta.{module}.parametrizations.weight.0.lora_B"][i]
        scaling = self.cfg["lora_alpha"] / self.cfg["lora_rank"]
        return w + (a @ b if embedding else b @ a) * scaling

    def _norm(self, x, name):
        t = self.tensors
        return torch.nn.functional.layer_norm(
            x, x.shape[-1:], t[f"roberta.{name}.weight"], t[f"roberta.{name}.bias"], self.cfg["layer_norm_eps"]
        )

    def _linear(self, x, module, task):
        return x @ self.weight(module, task).T + self.tensors[f"roberta.{module}.bias"]

    def states(self, ids: list[int], task: str | None) -> torch.Tensor:
        """Last hidden states [T, H] of one input."""
        cfg = self.cfg
        hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        dim = hidden // heads
        word = self.weight("embeddings.word_embeddings", task, embedding=True)
        token_type = self.weight("embeddings.token_type_embeddings", task, embedding=True)
        x = self._norm(word[ids] + token_type[0], "emb_ln")
        n = len(ids)
        for layer in range(cfg["num_hidden_layers"]):
            p = f"encoder.layers.{layer}"
            qkv = self._linear(x, f"{p}.mixer.Wqkv", task)
            q, k, v = (qkv[:, j * hidden : (j + 1) * hidden].reshape(n, heads, dim) for j in range(3))
            q, k = self._rotate(q), self._rotate(k)
            out = torch.empty(n, heads, dim, dtype=torch.float64)
            for h in range(heads):
                scores = (q[:, h] @ k[:, h].T) / math.sqrt(dim)
                out[:, h] = torch.softmax(scores, dim=-1) @ v[:, h]
            x = self._norm(x + self._linear(out.reshape(n, hidden), f"{p}.mixer.out_proj", task), f"{p}.norm1")
            mid = torch.nn.functional.gelu(self._linear(x, f"{p}.mlp.fc1", task))
            x = self._norm(x + self._linear(mid, f"{p}.mlp.fc2", task), f"{p}.norm2")
        return x

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, heads, d]: position p turns the pair (i, i + d/2) by p * base^(-2i/d)."""
        out = x.clone()
        dim = x.shape[-1]
        half = dim // 2
        base = self.cfg["rotary_emb_base"]
        for pos in range(x.shape[0]):
            for i in range(half):
                angle = pos * base ** (-2 * i / dim)
                c, s = math.cos(angle), math.sin(angle)
                a, b = x[pos, :, i], x[pos, :, i + half]
                out[pos, :, i] = a * c - b * s
                out[pos, :, i + half] = b * c + a * s
        return out

    def embed(self, text: str, task: str | None) -> np.ndarray:
        return self.embed_ids(self.ids(text, task), task)

    def embed_ids(self, ids: list[int], task: str | None) -> np.ndarray:
        return self.states(ids, task).mean(dim=0).numpy()


def _cos(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---- fidelity ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", [None, *TASKS])
def test_each_task_matches_the_reference(engine, reference, task):
    vectors = [out.dense for out in engine.forward(engine.prepare(TEXTS, task=task))]
    for text, got in zip(TEXTS, vectors, strict=True):
        want = reference.embed(text, task)
        assert _cos(got, want) > COS, (task, text, _cos(got, want))
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_a_mixed_task_batch_routes_each_row_to_its_adapter(engine, reference):
    texts = TEXTS * 2
    tasks = [*TASKS, None, "text-matching", "retrieval.query", "separation", "retrieval.passage"]
    items = engine.prepare(texts, task=tasks)
    assert [item.task for item in items] == tasks
    vectors = [out.dense for out in engine.forward(items)]
    for text, task, got in zip(texts, tasks, vectors, strict=True):
        assert _cos(got, reference.embed(text, task)) > COS, (task, text)
    # Same rows, one task per call: the mixed batch gives the same vectors.
    for i, (text, task) in enumerate(zip(texts, tasks, strict=True)):
        alone = engine.forward(engine.prepare([text], task=task))[0].dense
        np.testing.assert_allclose(vectors[i], alone, rtol=1e-4, atol=1e-5)


def test_the_adapters_make_a_difference(engine):
    """Guards against an engine that ignores its adapters: each task gives another vector for the same text."""
    text = "The quick brown fox jumps over the lazy dog"
    vectors = {t: engine.forward(engine.prepare([text], task=t))[0].dense for t in [None, *TASKS]}
    for a in vectors:
        for b in vectors:
            if a != b:
                assert _cos(vectors[a], vectors[b]) < 0.99, (a, b)


def test_matches_transformers_own_jina_v3_model_with_merged_weights(jina_dir, engine, reference):
    """An independent implementation of the architecture (transformers' JinaEmbeddingsV3Model, no hub code),
    loaded with the reference's merged weights: checks rotary layout, Wqkv split and block order."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "JinaEmbeddingsV3Model"):
        pytest.skip("this transformers has no JinaEmbeddingsV3Model")
    cfg = reference.cfg
    config = transformers.JinaEmbeddingsV3Config(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"],
        type_vocab_size=cfg["type_vocab_size"],
        layer_norm_eps=cfg["layer_norm_eps"],
        pad_token_id=cfg["pad_token_id"],
        rope_parameters={"rope_type": "default", "rope_theta": cfg["rotary_emb_base"]},
    )
    hidden = cfg["hidden_size"]
    for task in ("retrieval.query", None):
        t, state = reference.tensors, {}
        state["embeddings.word_embeddings.weight"] = reference.weight("embeddings.word_embeddings", task, True)
        state["embeddings.token_type_embeddings.weight"] = reference.weight(
            "embeddings.token_type_embeddings", task, True
        )
        state["embeddings.LayerNorm.weight"], state["embeddings.LayerNorm.bias"] = (
            t["roberta.emb_ln.weight"],
            t["roberta.emb_ln.bias"],
        )
        for i in range(cfg["num_hidden_layers"]):
            src, dst = f"roberta.encoder.layers.{i}", f"layers.{i}"
            qkv_w = reference.weight(f"encoder.layers.{i}.mixer.Wqkv", task)
            qkv_b = t[f"{src}.mixer.Wqkv.bias"]
            for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
                state[f"{dst}.self_attn.{name}.weight"] = qkv_w[j * hidden : (j + 1) * hidden]
                state[f"{dst}.self_attn.{name}.bias"] = qkv_b[j * hidden : (j + 1) * hidden]
            state[f"{dst}.self_attn.o_proj.weight"] = reference.weight(f"encoder.layers.{i}.mixer.out_proj", task)
            state[f"{dst}.self_attn.o_proj.bias"] = t[f"{src}.mixer.out_proj.bias"]
            for name in ("fc1", "fc2"):
                state[f"{dst}.mlp.{name}.weight"] = reference.weight(f"encoder.layers.{i}.mlp.{name}", task)
                state[f"{dst}.mlp.{name}.bias"] = t[f"{src}.mlp.{name}.bias"]
            for ours, theirs in (("norm1", "post_attention_layernorm"), ("norm2", "post_mlp_layernorm")):
                state[f"{dst}.{theirs}.weight"] = t[f"{src}.{ours}.weight"]
                state[f"{dst}.{theirs}.bias"] = t[f"{src}.{ours}.bias"]
        model = transformers.JinaEmbeddingsV3Model(config, add_pooling_layer=False).eval()
        model.load_state_dict({k: v.float() for k, v in state.items()})
        for text in TEXTS[:3]:
            ids = reference.ids(text, task)
            with torch.no_grad():
                theirs = model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(dim=0).numpy()
            ours = engine.forward(engine.prepare([text], task=task))[0].dense
            assert _cos(ours, theirs) > 0.9999, (task, text)


# ---- tokens, prompts, truncation ---------------------------------------------------------------------


@pytest.mark.parametrize("task", [None, *TASKS])
def test_token_ids_are_the_tokenizers_with_the_task_prompt(jina_dir, engine, task):
    tokenizer = AutoTokenizer.from_pretrained(jina_dir)
    prompt = TASK_INSTRUCTIONS[task] if task else ""
    want = [tokenizer(prompt + text)["input_ids"] for text in TEXTS]
    assert engine.token_ids(TEXTS, task=task) == want
    items = engine.prepare(TEXTS, task=task)
    assert [len(item) for item in items] == [len(w) for w in want]
    assert all(isinstance(item, AdapterTokens) and not item.truncated for item in items)


@pytest.mark.parametrize("task", [None, "retrieval.query", "retrieval.passage"])
def test_token_id_inputs_are_framed_like_texts(jina_dir, engine, task):
    tokenizer = AutoTokenizer.from_pretrained(jina_dir)
    plain = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]
    from_ids = engine.prepare_ids(plain, task=task)
    from_text = engine.prepare(TEXTS, task=task)
    assert [t.ids for t in from_ids] == [t.ids for t in from_text]
    assert [t.adapter for t in from_ids] == [t.adapter for t in from_text]
    a = np.stack([o.dense for o in engine.forward(from_ids)])
    b = np.stack([o.dense for o in engine.forward(from_text)])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError) as refused:
        engine.prepare_ids([[5, 6], [5, engine.vocab_size]], task=task)
    assert refused.value.index == 1


def test_token_details_and_decoding(engine):
    details = engine.token_details(TEXTS)
    assert [[t["id"] for t in d] for d in details] == engine.token_ids(TEXTS)
    assert details[0][0]["special"] and details[0][-1]["special"] and not details[0][1]["special"]
    word = details[0][1]
    assert TEXTS[0].encode()[word["start"] : word["stop"]].decode() == "hello"
    assert engine.decode_ids(engine.token_ids(TEXTS)) == TEXTS
    with pytest.raises(InputError):
        engine.decode_ids([[0, 10**6]])


def test_prompts_come_from_the_model_files(engine):
    assert engine.prompts == TASK_INSTRUCTIONS
    assert engine.tasks == tuple(TASKS)


def test_matryoshka_cut_of_the_raw_vector(engine, reference):
    text, task = TEXTS[2], "classification"
    raw = np.stack([engine.forward(engine.prepare([text], task=task))[0].dense])
    want = reference.embed(text, task)
    for dims in (8, 16, 32):
        cut = finalize_rows(raw, dims, normalize=True)[0]
        assert cut.shape == (dims,)
        assert abs(np.linalg.norm(cut) - 1.0) < 1e-5
        assert _cos(cut, want[:dims]) > COS


def test_truncation_keeps_the_prompt_and_cuts_the_text(jina_dir, reference):
    engine = JinaV3Engine(str(jina_dir), max_tokens=14)
    tokenizer = AutoTokenizer.from_pretrained(jina_dir)
    text, task = "the quick brown fox jumps over the lazy dog and the white rabbit", "retrieval.query"
    prompt = TASK_INSTRUCTIONS[task]
    full = tokenizer(prompt + text)["input_ids"]
    prompt_len = len(tokenizer(prompt.rstrip(), add_special_tokens=False)["input_ids"])

    whole = engine.prepare([text], task=task)[0]
    assert whole.ids == full and whole.full_length == len(full) > 14  # not cut: the caller refuses it

    right = engine.prepare([text], truncate=True, task=task)[0]
    assert right.ids == tokenizer(prompt + text, truncation=True, max_length=14)["input_ids"]
    assert right.full_length == len(full) and right.truncated

    left = engine.prepare([text], truncate=True, direction="left", task=task)[0]
    body = 14 - 2 - prompt_len
    assert left.ids == full[: 1 + prompt_len] + full[-1 - body : -1] + full[-1:]
    assert len(left) == 14

    for item in (right, left):
        got = engine.forward([item])[0].dense
        assert _cos(got, reference.embed_ids(item.ids, task)) > COS

    # Token-id inputs are cut the same way.
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    for direction, item in (("right", right), ("left", left)):
        from_ids = engine.prepare_ids([plain], truncate=True, direction=direction, task=task)[0]
        assert (from_ids.ids, from_ids.full_length) == (item.ids, item.full_length)


# ---- late chunking -----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["retrieval.passage", "text-matching", None])
def test_late_chunking_uses_the_requests_adapter(engine, reference, task):
    chunks = ["Follow the white rabbit.", "The quick brown fox jumps over the lazy dog.", "hello world"]
    vectors, counts = engine.late_chunk(chunks, task=task)
    tok = reference.tokenizer
    prompt = TASK_INSTRUCTIONS[task] if task else ""
    first = tok(prompt + chunks[0], add_special_tokens=False)["input_ids"]
    head = len(tok(prompt.rstrip(), add_special_tokens=False)["input_ids"]) if prompt else 0
    pieces = [first[head:]] + [tok(c, add_special_tokens=False)["input_ids"] for c in chunks[1:]]
    ids = [tok.bos_token_id, *first[:head], *[t for p in pieces for t in p], tok.eos_token_id]
    states = reference.states(ids, task)
    offset = 1 + head
    for i, piece in enumerate(pieces):
        want = states[offset : offset + len(piece)].mean(dim=0).numpy()
        offset += len(piece)
        assert _cos(vectors[i], want) > COS, (task, i)
    assert sum(counts) == len(ids)
    # Another adapter gives other chunk vectors.
    other, _ = engine.late_chunk(chunks, task="classification")
    assert _cos(vectors[1], other[1]) < 0.99


def test_late_chunking_past_the_limit_covers_every_chunk(jina_dir, reference):
    engine = JinaV3Engine(str(jina_dir), max_tokens=16)
    chunks = ["the quick brown fox", "jumps over the lazy dog", "and the white rabbit", "hello world x"] * 3
    vectors, counts = engine.late_chunk(chunks, task="separation")
    assert vectors.shape == (len(chunks), engine.dimensions) and np.isfinite(vectors).all()
    assert all(np.linalg.norm(v) > 0 for v in vectors)
    # The first chunk lies in the first window: its vector is that window's mean over its tokens.
    tok = reference.tokenizer
    window = 14
    content = [t for c in chunks for t in tok(c, add_special_tokens=False)["input_ids"]][:window]
    states = reference.states([tok.bos_token_id, *content, tok.eos_token_id], "separation")
    n = len(tok(chunks[0], add_special_tokens=False)["input_ids"])
    assert _cos(vectors[0], states[1 : 1 + n].mean(dim=0).numpy()) > COS
    assert sum(counts) > sum(len(tok(c, add_special_tokens=False)["input_ids"]) for c in chunks)


# ---- loading and the engine protocol -----------------------------------------------------------------


def test_speaks_the_engine_protocol(jina_dir):
    options = EngineOptions(max_tokens=64, max_batch_tokens=128, trust_remote_code=True, recipe={"default_task": None})
    engine = JinaV3Engine.load(str(jina_dir), options)
    assert isinstance(engine, EmbeddingEngine)
    caps = engine.capabilities
    assert (caps.max_tokens, caps.dimensions, caps.token_ids, caps.late_chunking) == (64, 32, True, True)
    assert engine.max_batch_tokens == 128
    # Many inputs over several micro-batches come back in order.
    texts = TEXTS * 6
    outs = engine.forward(engine.prepare(texts))
    alone = [engine.forward(engine.prepare([t]))[0].dense for t in TEXTS]
    for i, out in enumerate(outs):
        np.testing.assert_allclose(out.dense, alone[i % len(TEXTS)], rtol=1e-4, atol=1e-5)


def test_default_task_serves_inputs_without_one(jina_dir, engine):
    passage = JinaV3Engine.load(str(jina_dir), EngineOptions(recipe={"default_task": "retrieval.passage"}))
    item = passage.prepare(["hello world"])[0]
    assert item.task == "retrieval.passage" and item.adapter == 1
    want = engine.forward(engine.prepare(["hello world"], task="retrieval.passage"))[0].dense
    np.testing.assert_allclose(passage.forward([item])[0].dense, want, rtol=1e-5, atol=1e-6)
    # The engine's own default (none): base weights, no prompt.
    assert engine.prepare(["hello world"])[0].adapter is None


def test_unknown_tasks_are_refused(jina_dir, engine):
    with pytest.raises(InputError, match="unknown task") as refused:
        engine.prepare(["hello", "world"], task=["separation", "code.query"])
    assert refused.value.index == 1
    with pytest.raises(ValueError, match="2 tasks for 1 inputs"):
        engine.prepare(["hello"], task=["separation", "separation"])
    with pytest.raises(ValueError, match="default task"):
        JinaV3Engine(str(jina_dir), default_task="clustering")


def test_a_checkpoint_missing_an_adapter_is_refused(jina_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in jina_dir.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(jina_dir / "model.safetensors"))
    del tensors["roberta.encoder.layers.1.mlp.fc2.parametrizations.weight.0.lora_B"]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match="lacks 1 parameters"):
        JinaV3Engine(str(broken))


def test_absolute_position_checkpoints_are_refused(jina_dir, tmp_path):
    other = tmp_path / "absolute"
    other.mkdir()
    for f in jina_dir.iterdir():
        if f.is_file():
            (other / f.name).write_bytes(f.read_bytes())
    config = json.loads((other / "config.json").read_text())
    config["position_embedding_type"] = "absolute"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="rotary"):
        JinaV3Engine(str(other))


def test_the_family_and_the_catalog_entry_use_this_engine(engine):
    from deployments.families import FAMILIES
    from deployments.shell import engine_class
    from deployments.spec import ModelSpec
    from serve_app.catalog import load_catalog

    family = FAMILIES["jina-v3"]
    assert family.tasks == engine.tasks  # the five adapters, in the checkpoint's order
    assert (family.pooling, family.late_chunking, family.matryoshka_min) == ("mean", True, 32)
    assert family.engine_options == {"default_task": None}
    spec = ModelSpec.model_validate(load_catalog()["jina-embeddings-v3"])
    assert spec.family == "jina-v3" and not spec.trust_remote_code
    assert engine_class(spec) is JinaV3Engine
    assert spec.dimension_range() == (32, 1024) and spec.late_chunking_refusal() is None
