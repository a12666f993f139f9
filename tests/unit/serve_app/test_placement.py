"""The start-up placement check: which replicas of a config a cluster cannot hold, and what they lack."""

from __future__ import annotations

from serve_app.placement import Node, Replica, replicas_of, unplaceable


def _config(models: list[dict], router: dict | None = None) -> dict:
    args: dict = {"models": models}
    if router is not None:
        args["router"] = router
    return {"applications": [{"name": "embedserve", "import_path": "serve_app.app:build_app", "args": args}]}


def _encoder(name: str, tiny_dir: str, **deployment) -> dict:
    return {"name": name, "family": "encoder", "source": tiny_dir, "deployment": deployment}


def test_three_one_cpu_models_on_two_cores_name_the_third(tiny_xlmr):
    config = _config([_encoder(n, str(tiny_xlmr), num_cpus=1) for n in ("a", "b", "c")])
    replicas = replicas_of(config)
    assert [r.owner for r in replicas] == ["the router of app embedserve", "model a", "model b", "model c"]
    problems = unplaceable(replicas, [Node(cpus=2, gpus=0)])
    assert len(problems) == 1
    assert problems[0].startswith("model c needs 1 CPU per replica; free after the others are placed: 0 CPU")
    assert "model a" in problems[0] and "model b" in problems[0]


def test_fractions_fit_and_replica_counts_count(tiny_xlmr):
    fits = _config([_encoder(n, str(tiny_xlmr), num_cpus=0.5) for n in ("a", "b", "c")])
    assert unplaceable(replicas_of(fits), [Node(cpus=2, gpus=0)]) == []
    two = _config([_encoder("a", str(tiny_xlmr), num_cpus=1, num_replicas=3)])
    assert len(unplaceable(replicas_of(two), [Node(cpus=2, gpus=0)])) == 1
    scaled = _config(
        [_encoder("a", str(tiny_xlmr), num_cpus=1, autoscaling_config={"min_replicas": 0, "max_replicas": 8})]
    )
    assert len(replicas_of(scaled)) == 2  # router + the one replica the first request needs


def test_a_gpu_model_on_a_cpu_only_cluster():
    problems = unplaceable([Replica("model bge-m3", 1, 0.25)], [Node(cpus=16, gpus=0)])
    assert problems == ["model bge-m3 needs 1 CPU + 0.25 GPU per replica, more than any node has (the largest: 16 CPU)"]


def test_packing_across_nodes():
    replicas = [Replica(f"model m{i}", 1, 0.5) for i in range(4)]
    assert unplaceable(replicas, [Node(2, 1), Node(2, 1)]) == []
    assert len(unplaceable(replicas, [Node(2, 1), Node(8, 0)])) == 2


def test_the_readme_laptop_config_fits_two_cores_and_would_not_at_one_cpu_each():
    import copy

    import yaml
    from helpers.paths import REPO

    config = yaml.safe_load((REPO / "configs" / "laptop.yaml").read_text())
    assert len(config["applications"][0]["args"]["models"]) == 3
    assert unplaceable(replicas_of(config), [Node(cpus=2, gpus=0)]) == []
    whole = copy.deepcopy(config)
    for model in whole["applications"][0]["args"]["models"]:
        model["deployment"]["num_cpus"] = 1
    assert [p.split(" needs")[0] for p in unplaceable(replicas_of(whole), [Node(cpus=2, gpus=0)])] == [
        "model bge-reranker-v2-m3"
    ]
