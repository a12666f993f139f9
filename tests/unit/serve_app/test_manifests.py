"""The GPU Serve configs, the cluster launcher YAML, the RayService manifest and the image recipe, checked
without starting anything: Ray's own schemas, the KubeRay CRD, the catalog, and the sizing arithmetic."""

from __future__ import annotations

import copy
import math
import re
import shutil
import tomllib
from pathlib import Path

import pytest
import ray
import yaml
from helpers.cluster_sizing import CARD_GIB, SEED_MODELS, SINGLE_CARD_MODELS, size
from helpers.paths import REPO
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import ServeDeploySchema

from serve_app import manifests
from serve_app.catalog import load_catalog, resolve_models
from serve_app.config import AppArgs

ROOT = REPO
CRD = ROOT.parent / "shared" / "kuberay" / "ray.io_rayservices.yaml"
SINGLE = ROOT / "configs" / "gpu-single.yaml"
CLUSTER = ROOT / "configs" / "gpu-cluster.yaml"
MANIFEST = ROOT / "cluster" / "rayservice.yaml"
LAUNCHER = ROOT / "cluster" / "aws-gpu.yaml"
DOCKERFILE = ROOT / "cluster" / "Dockerfile"
WHOLE_GPU_MODELS = {"qwen3-vl-embedding-8b", "qwen3-vl-reranker-8b"}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _specs(path: Path):
    config = _load(path)
    (app,) = config["applications"]
    args = AppArgs.model_validate(app["args"])
    return {spec.name: spec for spec in resolve_models(args.models, load_catalog(args.catalog))}


def _raw_models(path: Path) -> dict[str, dict]:
    return {m["name"]: m for m in _load(path)["applications"][0]["args"]["models"]}


def _torch_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("torch==")]
    return pin.split("==", 1)[1]


# ---------------------------------------------------------------- Serve configs


@pytest.mark.parametrize("path", [SINGLE, CLUSTER], ids=lambda p: p.name)
def test_gpu_config_is_a_valid_serve_config_of_seed_models(path):
    config = _load(path)
    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    assert app["import_path"] == "serve_app.app:build_app"
    specs = _specs(path)
    assert set(specs) == set(SINGLE_CARD_MODELS if path == SINGLE else SEED_MODELS)
    assert set(SEED_MODELS) <= set(load_catalog())
    manifests.validate_serve_config(config, path.name)  # what the manifest generator accepts


@pytest.mark.parametrize("path", [SINGLE, CLUSTER], ids=lambda p: p.name)
def test_every_model_has_its_own_autoscaling_and_batching(path):
    raw = _raw_models(path)
    for name, spec in _specs(path).items():
        auto = raw[name]["deployment"]["autoscaling_config"]
        assert {
            "min_replicas",
            "max_replicas",
            "target_ongoing_requests",
            "upscale_delay_s",
            "downscale_delay_s",
        } <= set(auto), name
        AutoscalingConfig(**auto)
        assert set(raw[name]["batching"]) >= {"max_batch_tokens", "max_batch_size", "batch_wait_timeout_s"}, name
        # the rule the configs state: target about half a batch of single-input requests
        assert auto["target_ongoing_requests"] == spec.batching.max_batch_size // 2, name


@pytest.mark.parametrize("path", [SINGLE, CLUSTER], ids=lambda p: p.name)
def test_fractions_follow_the_sizing_arithmetic(path):
    for name, spec in _specs(path).items():
        if path == CLUSTER and name in WHOLE_GPU_MODELS:
            assert spec.deployment.num_gpus == 1, name
            continue
        sized = size(name, spec.max_tokens, spec.batching.max_batch_tokens)
        assert spec.deployment.num_gpus == pytest.approx(sized.num_gpus, abs=1e-9), name
        assert 0 < spec.deployment.num_gpus < 1
        # the replica's allocator cap (num_gpus x card) holds its estimate
        assert spec.deployment.num_gpus * CARD_GIB >= sized.need_gib - 1e-9


@pytest.mark.parametrize("path", [SINGLE, CLUSTER], ids=lambda p: p.name)
def test_comment_tables_match_the_arithmetic(path):
    """The sizing table in each config's header says what the code computes (to the printed precision)."""
    specs = _specs(path)
    rows = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^#\s+([a-z0-9.-]+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)\s+([\d.]+|-)\s+([\d.]+)\s+([\d.]+)", line)
        if match and match.group(1) in specs:
            rows[match.group(1)] = match.groups()[1:]
    assert set(rows) == set(specs)
    for name, (w, tokens, a, v, need, num_gpus) in rows.items():
        spec = specs[name]
        sized = size(name, spec.max_tokens, spec.batching.max_batch_tokens)
        assert float(w) == pytest.approx(sized.weights_gib, abs=0.005), name
        assert int(tokens) == sized.tokens, name
        assert float(a) == pytest.approx(sized.activations_gib, abs=0.0051), name
        assert (0.0 if v == "-" else float(v)) == pytest.approx(sized.vision_gib, abs=0.005), name
        assert float(need) == pytest.approx(sized.need_gib, abs=0.005), name
        assert float(num_gpus) == pytest.approx(spec.deployment.num_gpus if spec.deployment.num_gpus < 1 else 1), name


@pytest.mark.parametrize("path", [SINGLE, CLUSTER], ids=lambda p: p.name)
def test_per_model_comments_match_the_arithmetic(path):
    """The comment above each model entry shows its need and its fraction."""
    specs = _specs(path)
    block: list[str] = []
    seen = set()
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped)
            continue
        match = re.match(r"- name: (\S+)", stripped)
        if match and match.group(1) in specs:
            name, spec = match.group(1), specs[match.group(1)]
            sized = size(name, spec.max_tokens, spec.batching.max_batch_tokens)
            text = " ".join(block)
            assert f"{sized.need_gib:.2f} GiB" in text, (name, text)
            if spec.deployment.num_gpus < 1:
                (fraction,) = re.findall(r"-> (0\.\d+)", text)
                assert float(fraction) == spec.deployment.num_gpus, name
            seen.add(name)
        block = []
    assert seen == set(specs)


def test_single_gpu_packs_every_seed_model_on_one_card():
    specs = _specs(SINGLE)
    raw = _raw_models(SINGLE)
    # at max replicas too: the autoscaler must never ask for GPU memory that one card does not have
    total = sum(
        s.deployment.num_gpus * raw[n]["deployment"]["autoscaling_config"]["max_replicas"] for n, s in specs.items()
    )
    assert total <= 1.0
    assert round(total, 3) == 0.991  # the header's total
    assert sum(size(n, s.max_tokens, s.batching.max_batch_tokens).need_gib for n, s in specs.items()) <= CARD_GIB
    # the header's CPU count: replicas plus the router's
    router = _load(SINGLE)["applications"][0]["args"]["router"]
    cpus = sum(s.deployment.num_cpus for s in specs.values()) + router["num_cpus"] * router["num_replicas"]
    assert cpus == 16


def test_cluster_config_whole_gpus_and_packing():
    specs = _specs(CLUSTER)
    raw = _raw_models(CLUSTER)
    assert {n for n, s in specs.items() if s.deployment.num_gpus >= 1} == WHOLE_GPU_MODELS
    packed = {n: s for n, s in specs.items() if n not in WHOLE_GPU_MODELS}
    auto = {n: raw[n]["deployment"]["autoscaling_config"] for n in specs}
    at_min = sum(s.deployment.num_gpus * auto[n]["min_replicas"] for n, s in packed.items())
    at_max = sum(s.deployment.num_gpus * auto[n]["max_replicas"] for n, s in packed.items())
    assert (round(at_min, 3), round(at_max, 3)) == (0.81, 3.508)  # the header's totals

    # first-fit decreasing packing of every replica at max: the 3 cards the header claims
    bins: list[float] = []
    items = sorted(
        (s.deployment.num_gpus for n, s in packed.items() for _ in range(auto[n]["max_replicas"])), reverse=True
    )
    for item in items:
        for i, used in enumerate(bins):
            if used + item <= 1 + 1e-9:
                bins[i] += item
                break
        else:
            bins.append(item)
    whole_max = sum(auto[n]["max_replicas"] for n in WHOLE_GPU_MODELS)
    whole_min = sum(auto[n]["min_replicas"] for n in WHOLE_GPU_MODELS)
    assert len(bins) + whole_max == 12
    assert whole_min + math.ceil(at_min) == 3
    # the 32k contexts that one card could not afford come back here
    assert all(specs[n].max_tokens == 32768 for n in ("qwen3-embedding-4b", "qwen3-embedding-8b"))


# ---------------------------------------------------------------- cluster launcher


def test_cluster_launcher_yaml_is_valid_for_ray():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(LAUNCHER)
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    for name, node_type in raw["available_node_types"].items():
        assert all(isinstance(v, int) for v in node_type["resources"].values()), name
    gpu_types = [t for t in raw["available_node_types"].values() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(t["max_workers"] >= t["min_workers"] >= 1 for t in gpu_types)
    # nothing installed at node start: the image has it all (the AWS defaults would pip-install another Ray)
    assert prepared["setup_commands"] == [] and prepared["head_setup_commands"] == []
    # the same image as the RayService, and enough GPUs for gpu-cluster.yaml at max (11)
    assert raw["docker"]["image"] == _manifest_images().pop()
    assert sum(t["resources"]["GPU"] * t["max_workers"] for t in gpu_types) >= 11


def test_cluster_launcher_rejects_fractional_resources():
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = _load(LAUNCHER)
    bad["available_node_types"]["gpu_a100_80gb"]["resources"]["GPU"] = 0.5
    with pytest.raises(Exception, match="integer"):
        validate_config(prepare_config(bad))


# ---------------------------------------------------------------- RayService manifest


def _strict(schema):
    """The CRD schema with unknown fields refused, as the API server's pruning would silently drop them."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def rayservice_validator():
    if not CRD.exists():
        pytest.skip(f"KubeRay CRD not found at {CRD}")
    import jsonschema

    crd = yaml.load(CRD.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strict(v1["schema"]["openAPIV3Schema"])
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _manifest_images() -> set[str]:
    spec = _load(MANIFEST)["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}


def test_rayservice_manifest_is_valid_against_the_crd(rayservice_validator):
    manifest = _load(MANIFEST)
    errors = sorted(rayservice_validator.iter_errors(manifest), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == ray.__version__
    for group in cluster["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1, group["groupName"]
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
    # enough GPU pods for gpu-cluster.yaml: 3 at its min replicas, 11 at its max
    assert sum(g["minReplicas"] for g in cluster["workerGroupSpecs"]) >= 3
    assert all(g["maxReplicas"] >= 11 for g in cluster["workerGroupSpecs"])
    assert len(_manifest_images()) == 1


def test_crd_check_is_strict(rayservice_validator):
    manifest = _load(MANIFEST)
    typo = copy.deepcopy(manifest)
    typo["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 4
    wrong_type = copy.deepcopy(manifest)
    wrong_type["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplicas"] = "3"
    bad_mode = copy.deepcopy(manifest)
    bad_mode["spec"]["rayClusterConfig"]["autoscalerOptions"]["upscalingMode"] = "Fast"
    for bad in (typo, wrong_type, bad_mode):
        assert list(rayservice_validator.iter_errors(bad))


def test_serve_config_v2_is_the_cluster_config():
    manifest = _load(MANIFEST)
    assert manifest["metadata"]["annotations"][manifests.SOURCE_ANNOTATION] == "configs/gpu-cluster.yaml"
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == _load(CLUSTER)
    # and the committed file is byte for byte what the generator writes
    assert MANIFEST.read_text() == manifests.generate(MANIFEST)
    assert manifests.main(["--check"]) == 0


def test_generator_rewrites_and_checks(tmp_path, capsys):
    config = tmp_path / "serve.yaml"
    data = _load(CLUSTER)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    manifest = tmp_path / "rayservice.yaml"
    shutil.copy(MANIFEST, manifest)
    original = manifest.read_text()

    # point the copy at another config: only the annotation and the serveConfigV2 block change
    assert manifests.main([str(manifest), "--config", str(config)]) == 0
    rewritten = manifest.read_text()
    changed = [line for line in rewritten.splitlines() if line not in original.splitlines()]
    assert changed == [f"    {manifests.SOURCE_ANNOTATION}: {config}"]
    assert manifests.main([str(manifest), "--check"]) == 0

    # the config changes: --check fails with a diff and writes nothing; a plain run brings it up to date
    data["applications"][0]["args"]["models"][0]["batching"]["max_batch_size"] = 32
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()
    assert manifests.main([str(manifest), "--check"]) == 1
    assert "+            max_batch_size: 32" in capsys.readouterr().out
    assert manifest.read_text() == rewritten
    assert manifests.main([str(manifest)]) == 0
    assert yaml.safe_load(_load(manifest)["spec"]["serveConfigV2"]) == data
    assert manifests.main([str(manifest), "--check"]) == 0

    # a new manifest starts from cluster/rayservice.yaml
    fresh = tmp_path / "fresh.yaml"
    assert manifests.main([str(fresh), "--config", str(SINGLE)]) == 0
    assert yaml.safe_load(_load(fresh)["spec"]["serveConfigV2"]) == _load(SINGLE)
    assert _load(fresh)["metadata"]["annotations"][manifests.SOURCE_ANNOTATION] == "configs/gpu-single.yaml"


def test_generator_refuses_an_invalid_config(tmp_path, capsys):
    config = tmp_path / "serve.yaml"
    data = _load(CLUSTER)
    data["applications"][0]["args"]["models"].append({"name": "no-such-model"})
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    manifest = tmp_path / "rayservice.yaml"
    shutil.copy(MANIFEST, manifest)
    assert manifests.main([str(manifest), "--config", str(config)]) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert manifest.read_text() == MANIFEST.read_text()


# ---------------------------------------------------------------- container image


def test_dockerfile_installs_the_project_on_cuda_with_the_pinned_torch():
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    assert re.search(r"^FROM nvidia/cuda:\$\{CUDA_VERSION\}-cudnn-devel-ubuntu", text, flags=re.M)
    assert args["TORCH_VERSION"] == _torch_pin()
    assert re.fullmatch(r"cu1\d\d", args["TORCH_CUDA"])
    assert args["CUDA_VERSION"].replace(".", "").startswith(args["TORCH_CUDA"][2:])  # 12.8.x <-> cu128
    assert 'pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in text
    assert "pip install --no-build-isolation '.[gpu]'" in text  # a plain install: the catalog is package data
    assert text.index("torch==${TORCH_VERSION}") < text.index("'.[gpu]'")  # CUDA torch first, pip keeps it
    for source in ("serve_app", "deployments", "configs", "pyproject.toml"):
        assert re.search(rf"^COPY {source}\b", text, flags=re.M), source


def test_shipped_cluster_configs_keep_ray_ports_private_and_need_api_keys():
    """The network sees the API only, and the API needs keys (the router refuses an open API off loopback)."""
    manifest = _load(MANIFEST)["spec"]["rayClusterConfig"]
    for group in [manifest["headGroupSpec"], *manifest["workerGroupSpecs"]]:
        (container,) = group["template"]["spec"]["containers"]
        keys = [e for e in container["env"] if e["name"] == "EMBEDSERVE_API_KEYS"]
        assert keys and keys[0]["valueFrom"]["secretKeyRef"]["name"] == "embedserve-api-keys"
    policy = _load(REPO / "cluster" / "networkpolicy.yaml")
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["podSelector"]["matchLabels"] == {
        "ray.io/is-ray-node": "yes"
    }
    open_to_all = [rule for rule in policy["spec"]["ingress"] if "from" not in rule]
    assert [p["port"] for rule in open_to_all for p in rule["ports"]] == [8000]
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    assert [line for line in dockerfile.splitlines() if line.startswith("EXPOSE")] == ["EXPOSE 8000"]
    launcher = (REPO / "cluster" / "aws-gpu.yaml").read_text()
    assert "--dashboard-host=127.0.0.1" in launcher and "--dashboard-host=0.0.0.0" not in launcher
    for path in (REPO / "configs").glob("gpu*.yaml"):
        for app in _load(path)["applications"]:
            assert not (app["args"].get("auth") or {}).get("allow_unauthenticated"), path
