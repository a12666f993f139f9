"""Can the cluster hold what a Serve config asks for? Checked by `embedserve serve` before it deploys.

Ray Serve accepts a config whose replicas cannot all be placed: the ones that do not fit wait for resources
forever, and a laptop user who adds a third model to a 2-core machine sees requests hang. This module packs the
config's replicas (routers and models, each at its starting replica count) onto the cluster's nodes, first fit,
largest first, the way Ray's scheduler would at best, and names every replica that does not fit and what it
lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deployments.spec import DeploymentConfig

EPS = 1e-9


@dataclass(frozen=True)
class Replica:
    owner: str  # "model bge-m3" / "router of app embedserve"
    cpus: float
    gpus: float


@dataclass
class Node:
    cpus: float
    gpus: float
    holds: list[str] = field(default_factory=list)


def starting_replicas(d: DeploymentConfig) -> int:
    """Replicas Serve starts with: num_replicas, or the autoscaler's initial / min (at least 1: the first
    request of a scaled-to-zero model needs one too)."""
    if d.autoscaling_config is not None:
        a = d.autoscaling_config
        return max(1, int(a.get("initial_replicas") or 0), int(a.get("min_replicas") or 0))
    if isinstance(d.num_replicas, int):
        return d.num_replicas
    return 1


def replicas_of(serve_config: dict[str, Any]) -> list[Replica]:
    """Every replica the embedserve applications of a Serve config start with (other apps are not ours)."""
    from serve_app.catalog import load_catalog, resolve_models
    from serve_app.config import AppArgs

    out: list[Replica] = []
    for app in serve_config.get("applications") or []:
        if app.get("import_path") != "serve_app.app:build_app":
            continue
        args = AppArgs.model_validate(app.get("args") or {})
        router = args.router
        for _ in range(starting_replicas(router)):
            out.append(Replica(f"the router of app {app.get('name', 'default')}", router.num_cpus, router.num_gpus))
        for spec in resolve_models(args.models, load_catalog(args.catalog)):
            d = spec.deployment
            out.extend(Replica(f"model {spec.name}", d.num_cpus, d.num_gpus) for _ in range(starting_replicas(d)))
    return out


def nodes_of_cluster() -> list[Node]:
    """The live nodes of the Ray cluster this process is connected to, with their total CPUs and GPUs."""
    import ray

    return [
        Node(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
        for n in ray.nodes()
        if n.get("Alive")
    ]


def unplaceable(replicas: list[Replica], nodes: list[Node]) -> list[str]:
    """One line per replica that fits on no node once the others are placed; [] when all fit."""
    free = [Node(n.cpus, n.gpus) for n in nodes]
    problems = []
    for r in sorted(replicas, key=lambda r: (r.gpus, r.cpus), reverse=True):
        home = next((n for n in free if n.cpus + EPS >= r.cpus and n.gpus + EPS >= r.gpus), None)
        if home is not None:
            home.cpus -= r.cpus
            home.gpus -= r.gpus
            home.holds.append(r.owner)
            continue
        problems.append(_lack(r, nodes, free))
    return problems


def _lack(r: Replica, nodes: list[Node], free: list[Node]) -> str:
    need = _amounts(r.cpus, r.gpus)
    if not any(n.cpus + EPS >= r.cpus and n.gpus + EPS >= r.gpus for n in nodes):
        biggest = max(nodes, key=lambda n: (n.gpus, n.cpus), default=Node(0, 0))
        return (
            f"{r.owner} needs {need} per replica, more than any node has "
            f"(the largest: {_amounts(biggest.cpus, biggest.gpus)})"
        )
    taken = sorted({owner for n in free for owner in n.holds})
    left = ", ".join(_amounts(max(n.cpus, 0), max(n.gpus, 0)) for n in free) or "nothing"
    return f"{r.owner} needs {need} per replica; free after the others are placed: {left} (taken by {', '.join(taken)})"


def _amounts(cpus: float, gpus: float) -> str:
    text = f"{cpus:g} CPU"
    return text + (f" + {gpus:g} GPU" if gpus > EPS else "")


HINT = (
    "Lower `deployment.num_cpus` / `num_gpus` of some models (a fraction such as 0.5 is fine; set `torch_threads` "
    "to keep its compute threads), serve fewer models, or give Ray more (`--num-cpus`, a bigger cluster)."
)
