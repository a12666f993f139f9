"""Multi-node scenarios on a real two-node Ray cluster with fake GPUs, for tests/integration/test_cluster.py.

A `ray.cluster_utils.Cluster` needs a Ray of its own, so this runs as its own process (the rest of the suite
shares one local Ray per pytest session):

    python tests/helpers/cluster_scenarios.py --out results.json

Two nodes on 127.0.0.1 with one fake GPU each; the embedserve app is deployed the way `serve deploy` and KubeRay
do (a Serve config applied to the controller), with tiny random-weight models. Phases, each recorded in the
JSON written to --out (and printed as the last line of stdout):

  placement   a whole-GPU model, then a model with two 0.5-GPU replicas: where every replica landed
  autoscale   sustained load takes a model from 1 to 2 replicas; after the load stops it returns to 1
  reconfigure a new user_config (batching) applied to a running model while requests are in flight

Loopback only (as serve_app/local_ray.py start_local_ray): RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is imported,
no dashboard, no usage stats, the loopback worker hook, HTTP on 127.0.0.1. Ray's files go to a private
RAY_TMPDIR, so this cluster never becomes the machine's "current cluster" for another ray.init(). Every load
is bounded in requests and time. The cluster is shut down at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

TMP_ROOT = tempfile.mkdtemp(prefix="esc-", dir="/tmp")  # short: Ray's unix socket paths live under it
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keeps Ray's servers on 127.0.0.1 (see serve_app/local_ray.py)
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_TMPDIR": TMP_ROOT,
    # autoscaling metrics every 0.5 s instead of 10 s, so scaling decisions come within the test's time
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    # as in cluster/: largest replicas first, small ones packed best-fit
    "RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY": "1",
}
os.environ.update(LOOPBACK_ENV)
os.environ.pop("RAY_ADDRESS", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: `from helpers.<module> import ...`

import httpx  # noqa: E402
import orjson  # noqa: E402
import ray  # noqa: E402
import ray._private.ray_constants as ray_constants  # noqa: E402
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.serve.context import _get_global_client  # noqa: E402
from ray.serve.schema import ServeDeploySchema  # noqa: E402

from serve_app import loopback  # noqa: E402
from serve_app.loadgen import BackgroundLoad, Sample  # noqa: E402

ray_constants.ENABLE_RAY_CLUSTER = False
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------ Serve config helpers


class Scenario:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.client = _get_global_client()

    def config(self, apps: list[dict]) -> dict:
        """A Serve config in the format of configs/*.yaml (what `serve deploy` and KubeRay send)."""
        return {
            "proxy_location": "HeadOnly",  # two nodes share this machine's ports: one proxy
            "http_options": {"host": "127.0.0.1", "port": self.port},
            "applications": apps,
        }

    def app(self, name: str, route_prefix: str, models: list[dict], deployments: list[dict] | None = None) -> dict:
        app = {
            "name": name,
            "route_prefix": route_prefix,
            "import_path": "serve_app.app:build_app",
            "args": {"models": models, "router": {"num_cpus": 0}},
        }
        if deployments:
            app["deployments"] = deployments
        return app

    def apply(self, config: dict) -> None:
        self.client.deploy_apps(ServeDeploySchema.model_validate(config))

    def wait_running(self, app_names: list[str], timeout: float = 120) -> None:
        def running():
            apps = serve.status().applications
            for name in app_names:
                status = apps.get(name)
                if status is None or status.status != "RUNNING":
                    return False
            return True

        wait_until(running, timeout, what=f"applications {app_names} RUNNING")

    def wait_deleted(self, app_names: list[str], timeout: float = 60) -> None:
        wait_until(lambda: not set(app_names) & set(serve.status().applications), timeout, what=f"{app_names} deleted")

    def details(self) -> dict:
        return ray.get(self.client._controller.get_serve_instance_details.remote())

    def running_replicas(self, app: str, deployment: str) -> list[dict]:
        apps = self.details().get("applications", {})
        deps = apps.get(app, {}).get("deployments", {})
        replicas = deps.get(deployment, {}).get("replicas", [])
        return [r for r in replicas if r.get("state") == "RUNNING"]

    def describe_all(self, app: str, deployment: str, expected: int, tries: int = 100) -> list[dict]:
        """describe() of every running replica (requests are routed at random: call until all answered)."""
        handle = serve.get_deployment_handle(deployment, app_name=app)
        facts: dict[int, dict] = {}
        for _ in range(tries):
            fact = handle.describe.remote().result(timeout_s=30)
            facts[fact["pid"]] = fact
            if len(facts) >= expected:
                break
            time.sleep(0.05)
        return list(facts.values())

    def embed(self, http: httpx.Client, prefix: str, model: str, text: str) -> httpx.Response:
        return http.post(f"{self.base}{prefix}/v1/embeddings", json={"model": model, "input": text})


def tiny_entry(name: str, family: str, source: Path, deployment: dict, batching: dict | None = None) -> dict:
    entry = {
        "name": name,
        "family": family,
        "source": str(source),
        "deployment": {"num_cpus": 0.25, "torch_threads": 1, "graceful_shutdown_timeout_s": 2, **deployment},
    }
    if family == "qwen3-embedding":
        entry["instruction_aware"] = True
    if batching:
        entry["batching"] = batching
    return entry


LOAD_TEXT = "load client {}: the quick brown fox jumps over the lazy dog"


def embed_load(
    sc: Scenario, prefix: str, model: str, clients: int, max_requests: int, max_seconds: float
) -> BackgroundLoad:
    """`clients` workers posting to one model until stopped, at most `max_requests` per client and `max_seconds`
    in all, each client's text its own prepared request. A sample's `detail` is the vector (or the error text)."""

    def keep(sample: Sample, content: bytes) -> Any:
        try:
            if sample.status == 200:
                return orjson.loads(content)["data"][0]["embedding"]
        except (ValueError, KeyError, IndexError) as exc:  # a bad answer is a result, not a crash of the load
            sample.error = repr(exc)
        return content[:300].decode("utf-8", "replace")

    bodies = [orjson.dumps({"model": model, "input": LOAD_TEXT.format(i)}) for i in range(clients)]
    return BackgroundLoad(
        f"{sc.base}{prefix}/v1/embeddings",
        bodies,
        concurrency=clients,
        max_requests=clients * max_requests,
        duration_s=max_seconds,
        inspect=keep,
    )


# ------------------------------------------------------------------ the phases


def phase_placement(sc: Scenario, tiny: dict[str, Path], nodes: dict[str, str]) -> dict:
    whole = sc.app(
        "whole", "/whole", [tiny_entry("tiny-whole", "encoder", tiny["xlmr"], {"num_gpus": 1.0, "num_replicas": 1})]
    )
    packed = sc.app(
        "packed",
        "/packed",
        [tiny_entry("tiny-half", "qwen3-embedding", tiny["qwen3"], {"num_gpus": 0.5, "num_replicas": 2})],
    )
    log("placement: deploying a whole-GPU model")
    sc.apply(sc.config([whole]))
    sc.wait_running(["whole"])
    log("placement: adding a model with two 0.5-GPU replicas")
    sc.apply(sc.config([whole, packed]))
    sc.wait_running(["whole", "packed"])
    result: dict[str, Any] = {
        "nodes": nodes,
        "whole": sc.describe_all("whole", "tiny-whole", 1),
        "half": sc.describe_all("packed", "tiny-half", 2),
        "whole_details": sc.running_replicas("whole", "tiny-whole"),
        "half_details": sc.running_replicas("packed", "tiny-half"),
    }
    with contextlib.suppress(TimeoutError):  # resource views lag a little; the test reads the value
        wait_until(lambda: ray.available_resources().get("GPU", 0.0) < 1e-6, 15, what="every GPU in use")
    result["gpus_available"] = ray.available_resources().get("GPU", 0.0)
    result["gpus_total"] = ray.cluster_resources().get("GPU", 0.0)
    with httpx.Client(timeout=30, trust_env=False) as http:
        result["http"] = {
            "whole": sc.embed(http, "/whole", "tiny-whole", "hello").status_code,
            "half": [sc.embed(http, "/packed", "tiny-half", f"hello {i}").status_code for i in range(4)],
        }
    return result


def scale_app(sc: Scenario, tiny: dict[str, Path], live_batching: dict, deployments: list[dict] | None = None) -> dict:
    auto = tiny_entry(
        "tiny-auto",
        "encoder",
        tiny["xlmr"],
        {
            "num_gpus": 0.5,
            "autoscaling_config": {
                "min_replicas": 1,
                "max_replicas": 2,
                "target_ongoing_requests": 2,
                "upscale_delay_s": 1,
                "downscale_delay_s": 2,
                "look_back_period_s": 2,
            },
        },
        # a request waits up to 100 ms for its batch to fill: load stays "ongoing" without burning the CPU
        {"max_batch_tokens": 4096, "max_batch_size": 64, "batch_wait_timeout_s": 0.1},
    )
    live = tiny_entry(
        "tiny-live", "qwen3-embedding", tiny["qwen3"], {"num_gpus": 0.25, "num_replicas": 1}, live_batching
    )
    return sc.app("scale", "/", [auto, live], deployments)


LIVE_BEFORE = {"max_batch_tokens": 1024, "max_batch_size": 8, "batch_wait_timeout_s": 0.0}
LIVE_AFTER = {"max_batch_tokens": 4096, "max_batch_size": 32, "batch_wait_timeout_s": 0.4}


def phase_autoscale(sc: Scenario, tiny: dict[str, Path]) -> dict:
    log("autoscale: replacing the placement apps with an autoscaled model")
    sc.apply(sc.config([scale_app(sc, tiny, LIVE_BEFORE)]))
    sc.wait_deleted(["whole", "packed"])
    sc.wait_running(["scale"])
    result: dict[str, Any] = {"before": len(sc.running_replicas("scale", "tiny-auto"))}
    timeline: list[tuple[float, int]] = []

    def replicas() -> int:
        n = len(sc.running_replicas("scale", "tiny-auto"))
        if not timeline or timeline[-1][1] != n:
            timeline.append((round(time.monotonic() - T0, 1), n))
        return n

    start = time.monotonic()
    # 6 clients against a target of 2 ongoing requests per replica: Serve wants 3, max_replicas caps it at 2.
    # The wait covers a replica's start-up on a busy 2-core machine.
    with embed_load(sc, "", "tiny-auto", clients=6, max_requests=600, max_seconds=100) as load:
        try:
            wait_until(lambda: replicas() >= 2, 95, what="tiny-auto to scale up to 2 replicas")
            result["scaled_up_after_s"] = round(time.monotonic() - start, 1)
            result["peak"] = replicas()
            result["up_replicas"] = [
                {"node_id": r["node_id"], "pid": r["pid"]} for r in sc.running_replicas("scale", "tiny-auto")
            ]
        finally:
            load.stop()
    statuses = [s.status for s in load.samples]
    result["load_requests"] = len(statuses)
    result["load_ok"] = statuses.count(200)
    log(f"autoscale: load stopped after {len(statuses)} requests; waiting for the scale-down")
    stopped = time.monotonic()
    wait_until(lambda: replicas() == 1, 60, what="tiny-auto to scale back to 1 replica")
    result["scaled_down_after_s"] = round(time.monotonic() - stopped, 1)
    result["after"] = replicas()
    result["timeline"] = timeline
    return result


def lone_latencies(sc: Scenario, n: int) -> list[float]:
    out = []
    with httpx.Client(timeout=30, trust_env=False) as http:
        for i in range(n):
            start = time.monotonic()
            response = sc.embed(http, "", "tiny-live", f"a lone request {i}")
            assert response.status_code == 200, response.text
            out.append(round(time.monotonic() - start, 3))
    return out


def phase_reconfigure(sc: Scenario, tiny: dict[str, Path]) -> dict:
    result: dict[str, Any] = {"old_batching": LIVE_BEFORE, "new_batching": LIVE_AFTER}
    result["before_replica"] = sc.describe_all("scale", "tiny-live", 1)[0]
    result["before_latency_s"] = lone_latencies(sc, 5)
    # the user_config of a deployment, set in the config's `deployments:` section: applied in place
    # (changing `args` instead would change the app's code version and restart its replicas)
    override = [{"name": "tiny-live", "user_config": {"batching": LIVE_AFTER}}]
    new_config = sc.config([scale_app(sc, tiny, LIVE_BEFORE, override)])
    with embed_load(sc, "", "tiny-live", clients=4, max_requests=150, max_seconds=60) as load:
        time.sleep(1.5)
        log("reconfigure: applying new batching values under load")
        result["update_at"] = time.monotonic()
        sc.apply(new_config)
        # the new batch wait shows in the load itself: requests now wait for a batch that does not fill
        wait_until(
            lambda: any(s.start > result["update_at"] and s.latency >= 0.35 for s in list(load.samples)),
            45,
            what="requests to wait for the new batch timeout",
        )
        sc.wait_running(["scale"], timeout=30)
        time.sleep(1.0)
        load.stop()
    records = sorted(load.samples, key=lambda s: s.start)
    update_at = result["update_at"]
    result["load_requests"] = len(records)
    result["load_statuses"] = sorted({str(s.status) for s in records})
    result["load_failures"] = [dataclasses.asdict(s) for s in records if not s.ok][:5]
    result["in_flight_at_update"] = sum(1 for s in records if s.start < update_at < s.end)
    result["before_update_latency_s"] = [round(s.latency, 3) for s in records if s.end < update_at]
    result["after_update_latency_s"] = [round(s.latency, 3) for s in records if s.start > update_at]
    vectors: dict[int, list[list[float]]] = {}  # per client text: every answer should be the same vector
    for s in records:
        if s.ok:
            vectors.setdefault(s.item, []).append(s.detail)
    result["max_vector_spread"] = max(
        (max(abs(a - b) for a, b in zip(vs[0], v, strict=True)) for vs in vectors.values() for v in vs), default=None
    )
    result["after_latency_s"] = lone_latencies(sc, 3)
    result["after_replica"] = sc.describe_all("scale", "tiny-live", 1)[0]
    result["running_replicas"] = len(sc.running_replicas("scale", "tiny-live"))
    details = sc.details()["applications"]["scale"]["deployments"]["tiny-live"]
    result["user_config"] = details["deployment_config"].get("user_config")
    result["applied_log"] = applied_batching_logs("tiny-live")
    return result


def applied_batching_logs(model: str) -> list[str]:
    """The replica's own log lines from `reconfigure` (deployments/embedding.py logs the batching it applied)."""
    lines = []
    for path in sorted(Path(TMP_ROOT).glob(f"ray/session_*/logs/serve/replica_*_{model}_*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if f"{model} batching:" in line:
                lines.append(line[line.index(f"{model} batching:") :])
    return lines


# ------------------------------------------------------------------ process bookkeeping


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def listeners(pids: set[int]) -> list[tuple[str, bool]]:
    """TCP listeners of these processes, (address, on loopback), from /proc (no tools needed)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            parts = row.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state != "0A" or inode not in inodes:
                continue
            addr = local.split(":")[0]
            on_loopback = addr in ("0100007F", "00000000000000000000000001000000") or addr.endswith("0100007F")
            found.append((f"{table}:{local}", on_loopback))
    return found


def serve_log_tail(limit: int = 60) -> list[str]:
    lines = []
    for path in sorted(Path(TMP_ROOT).glob("ray/session_*/logs/serve/*.log")):
        text = path.read_text(errors="replace").splitlines()
        errors = [line for line in text if "ERROR" in line or "Traceback" in line]
        lines += [f"{path.name}: {line}" for line in errors[-10:]]
    return lines[-limit:]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--phases", default="placement,autoscale,reconfigure")
    args = parser.parse_args()
    phases = args.phases.split(",")
    # a SIGTERM (the test's time-out) unwinds through `finally`, so the cluster is still shut down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from helpers.tiny_models import build_tiny_qwen3, build_tiny_xlmr

    results: dict[str, Any] = {"tmp_root": TMP_ROOT, "phases": {}}
    cluster = None
    try:
        models_dir = Path(TMP_ROOT) / "models"
        tiny = {
            "xlmr": build_tiny_xlmr(models_dir / "xlmr", pooling="cls"),
            "qwen3": build_tiny_qwen3(models_dir / "qwen3"),
        }
        log("starting a two-node cluster (1 fake GPU per node)")
        node_args = {"num_cpus": 3, "num_gpus": 1, "node_ip_address": "127.0.0.1"}
        cluster = Cluster(
            initialize_head=True,
            # a free agent port: the default one may be held by the test session's own Ray
            head_node_args={**node_args, "include_dashboard": False, "dashboard_agent_listen_port": free_port()},
        )
        worker = cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        ray.init(
            address=cluster.address,
            namespace="serve",
            log_to_driver=False,
            runtime_env={
                "env_vars": {k: v for k, v in LOOPBACK_ENV.items() if k != "RAY_TMPDIR"},
                "worker_process_setup_hook": loopback.HOOK,
            },
        )
        nodes = {"head": cluster.head_node.node_id, "worker": worker.node_id}
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        sc = Scenario(port)
        log(f"cluster up: nodes {nodes}, Serve on 127.0.0.1:{port}")
        for name, run in (
            ("placement", lambda: phase_placement(sc, tiny, nodes)),
            ("autoscale", lambda: phase_autoscale(sc, tiny)),
            ("reconfigure", lambda: phase_reconfigure(sc, tiny)),
        ):
            if name not in phases:
                continue
            started = time.monotonic()
            try:
                results["phases"][name] = run()
            except Exception as exc:
                log(f"{name} failed: {exc!r}")
                results["phases"][name] = {"error": repr(exc), "traceback": traceback.format_exc()}
            results["phases"][name]["seconds"] = round(time.monotonic() - started, 1)
            log(f"{name}: done in {results['phases'][name]['seconds']}s")
        tree = descendants(os.getpid())
        found = listeners(tree)
        results["processes"] = len(tree)
        results["listeners"] = len(found)
        results["non_loopback_listeners"] = [address for address, on_loopback in found if not on_loopback]
        results["serve_errors"] = serve_log_tail()
    except Exception as exc:
        results["error"] = repr(exc)
        results["traceback"] = traceback.format_exc()
    finally:
        log("shutting down")
        try:
            serve.shutdown()
        except Exception as exc:
            results.setdefault("shutdown_errors", []).append(repr(exc))
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        results["left_processes"] = sorted(descendants(os.getpid()))
        results["seconds"] = round(time.monotonic() - T0, 1)
        shutil.rmtree(TMP_ROOT, ignore_errors=True)
    text = json.dumps(results, default=str)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
