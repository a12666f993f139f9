"""Scale-out on a real multi-node Ray cluster: fractional-GPU placement, autoscaling, live batching updates.

The scenarios run in tests/helpers/cluster_scenarios.py, in a process of their own: a `ray.cluster_utils.Cluster`
(two nodes, one fake GPU each, 127.0.0.1 only) cannot share the Ray instance the rest of the suite uses.
That process writes its observations as JSON; the tests here assert on them.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import REPO

pytestmark = pytest.mark.integration

SCRIPT = REPO / "tests" / "helpers" / "cluster_scenarios.py"
ROOT = REPO
TIMEOUT_S = 420


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("cluster") / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: on a time-out, it and only it is ended
    )
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
    except BaseException as exc:  # time-out, or the run interrupted: end the scenarios (they shut Ray down)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        pytest.fail(f"cluster scenarios ran past {TIMEOUT_S}s:\n{stderr[-4000:]}")
    assert proc.returncode == 0 and out.exists(), stderr[-4000:]
    results = json.loads(out.read_text())
    results["stderr_tail"] = stderr[-4000:]
    return results


def _phase(results: dict, name: str) -> dict:
    phase = results["phases"].get(name)
    assert phase is not None, results.get("traceback") or results["stderr_tail"]
    assert "error" not in phase, f"{phase['error']}\n{phase.get('traceback')}\n{results['serve_errors']}"
    return phase


def test_replicas_are_placed_by_their_gpu_fractions(scenarios):
    p = _phase(scenarios, "placement")
    (whole,) = p["whole"]
    halves = p["half"]
    assert len(halves) == 2 and len({h["pid"] for h in halves}) == 2
    # the whole-GPU replica has a GPU to itself on one node ...
    assert len(whole["gpu_ids"]) == 1
    assert whole["node_id"] in p["nodes"].values()
    # ... so both 0.5 replicas share the other node's single GPU
    assert {h["node_id"] for h in halves} == set(p["nodes"].values()) - {whole["node_id"]}
    assert halves[0]["gpu_ids"] == halves[1]["gpu_ids"] and len(halves[0]["gpu_ids"]) == 1
    # Serve's own view agrees, and the cluster has no GPU left
    assert {r["node_id"] for r in p["half_details"]} == {h["node_id"] for h in halves}
    assert {r["pid"] for r in p["half_details"]} == {h["pid"] for h in halves}
    assert p["gpus_total"] == 2 and p["gpus_available"] == pytest.approx(0.0, abs=1e-6)
    assert p["http"] == {"whole": 200, "half": [200, 200, 200, 200]}


def test_autoscaling_goes_up_under_load_and_back_down_after(scenarios):
    p = _phase(scenarios, "autoscale")
    assert p["before"] == 1
    assert p["peak"] >= 2 and len(p["up_replicas"]) >= 2
    assert p["after"] == 1
    counts = [n for _, n in p["timeline"]]
    assert counts[0] == 1 and max(counts) >= 2 and counts[-1] == 1
    assert p["load_requests"] > 0 and p["load_ok"] == p["load_requests"]  # scaling dropped nothing
    assert p["load_requests"] <= 6 * 600  # the load is bounded


def test_live_batching_update_keeps_requests_in_flight(scenarios):
    p = _phase(scenarios, "reconfigure")
    # requests were in flight when the new config arrived, and every request succeeded
    assert p["in_flight_at_update"] >= 1
    assert p["load_statuses"] == ["200"], p["load_failures"]
    # updated in place: the same replica process, never a second one
    assert p["after_replica"]["pid"] == p["before_replica"]["pid"]
    assert p["running_replicas"] == 1
    # the new values are the deployment's user_config, and the replica applied them in `reconfigure`
    new, old = p["new_batching"], p["old_batching"]
    assert new != old and new["batch_wait_timeout_s"] >= 0.3 > old["batch_wait_timeout_s"]
    assert p["user_config"] == {"batching": new}
    assert p["applied_log"], "the replica logged no batching update"
    assert all(f"'{k}': {v}" in p["applied_log"][-1] for k, v in new.items()), p["applied_log"]
    # and the running batcher uses them: a lone request now waits out the new batch timeout
    assert statistics.median(p["before_latency_s"]) < 0.3
    assert min(p["after_latency_s"]) >= new["batch_wait_timeout_s"] - 0.05
    # batching changes how requests are grouped, never what they return
    assert p["max_vector_spread"] is not None and p["max_vector_spread"] < 1e-5


def test_cluster_stays_on_loopback_and_shuts_down(scenarios):
    assert "error" not in scenarios, scenarios.get("traceback")
    assert scenarios["listeners"] > 0  # the check saw Ray's servers ...
    assert scenarios["non_loopback_listeners"] == []  # ... all on 127.0.0.1
    assert scenarios["left_processes"] == []
    tmp_root = scenarios["tmp_root"]
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if tmp_root.encode() in (entry / "cmdline").read_bytes():
                    leftovers.append(entry.name)
            except OSError:
                continue
    assert leftovers == []
    assert not Path(tmp_root).exists()
