"""Summary, ratios, targets, the markdown table and the PNG plot (pillow: no matplotlib needed)."""

from __future__ import annotations

from pathlib import Path

TARGETS = {
    "served_over_inproc_c64": 0.8,
    "served_over_inproc_b32": 0.95,
    "ours_over_infinity": 1.2,
    "idle_overhead_ms": 10.0,
    "padding_efficiency": 0.9,
}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(record: dict) -> dict:
    engine = record.get("inprocess", {}).get("engine", {})
    recheck = record.get("inprocess", {}).get("engine_recheck", {})
    limit_inputs = max(
        [x for x in (engine.get("best", {}).get("inputs_per_s"), recheck.get("corpus", {}).get("inputs_per_s")) if x]
        or [None]
    )
    limit_mixed_tokens = max(
        [x for x in (engine.get("mixed", {}).get("tokens_per_s"), recheck.get("mixed", {}).get("tokens_per_s")) if x]
        or [None]
    )
    services = record.get("services", {})
    ours = services.get("embedserve", {}).get("best", {}) or {}
    inf = services.get("infinity", {}).get("best", {}) or {}
    rows = []
    for name, meta in record.get("workloads", {}).items():
        o, i = ours.get(name), inf.get(name)
        mixed = name == "mixed"
        unit = "tokens_per_s" if mixed else "inputs_per_s"
        limit = limit_mixed_tokens if mixed else limit_inputs
        rows.append(
            {
                "workload": name,
                "label": meta["label"],
                "inproc_limit": limit,
                "inproc_unit": unit,
                "ours": _row(o),
                "infinity": _row(i),
                "ours_over_inproc": _ratio(o and o[unit], limit),
                "infinity_over_inproc": _ratio(i and i[unit], limit),
                "ours_over_infinity": _ratio(o and o["inputs_per_s"], i and i["inputs_per_s"]),
            }
        )
    by = {r["workload"]: r for r in rows}
    idle_engine = min(
        [x for x in (engine.get("idle", {}).get("p50_ms"), recheck.get("idle", {}).get("p50_ms")) if x] or [None]
    )
    idle_ours = (by.get("c1") or {}).get("ours", {}).get("p50_ms")
    idle_inf = (by.get("c1") or {}).get("infinity", {}).get("p50_ms")
    memory = {n: s.get("memory") for n, s in services.items() if s.get("memory")}
    st = record.get("inprocess", {}).get("sentence_transformers", {})
    summary = {
        "inproc_limit_inputs_per_s": limit_inputs,
        "inproc_limit_mixed_tokens_per_s": limit_mixed_tokens,
        "inproc_best_max_batch_tokens": engine.get("best_max_batch_tokens"),
        "inproc_32_per_call_inputs_per_s": engine.get("per_call_32", {}).get("inputs_per_s"),
        "sentence_transformers_inputs_per_s": st.get("inputs_per_s"),
        "rows": rows,
        "idle_p50_ms": {"engine": idle_engine, "embedserve": idle_ours, "infinity": idle_inf},
        "idle_overhead_ms": {
            "embedserve": idle_ours - idle_engine if idle_ours is not None and idle_engine is not None else None,
            "infinity": idle_inf - idle_engine if idle_inf is not None and idle_engine is not None else None,
        },
        "padding_efficiency": record.get("padding", {}).get("efficiency"),
        "live_padding_efficiency": ((by.get("mixed") or {}).get("ours") or {}).get("mean_padding_efficiency"),
        "memory": memory,
    }
    summary["targets"] = _targets(summary, by)
    return summary


def _row(r: dict | None) -> dict:
    if not r:
        return {}
    lat = r["latency"]
    return {
        "inputs_per_s": r["inputs_per_s"],
        "tokens_per_s": r["tokens_per_s"],
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "errors": r["errors"],
        "requests": r["requests"],
        "client_cpu_cores": r.get("client_cpu_cores"),
        "service_cpu_cores": r.get("service_cpu_cores"),
        "round": r.get("round"),
        "mean_batch_items": (r.get("serve_batches") or {}).get("mean_batch_items"),
        "mean_padding_efficiency": (r.get("serve_batches") or {}).get("mean_padding_efficiency"),
    }


def _targets(s: dict, by: dict) -> list[dict]:
    def get(w, key):
        return (by.get(w) or {}).get(key)

    out = [
        ("served/in-process, 1 input/req, 64 in flight", get("c64", "ours_over_inproc"), ">=", 0.8),
        ("served/in-process, 32 inputs/req", get("b32", "ours_over_inproc"), ">=", 0.95),
        ("ours/Infinity, 1 input/req, 64 in flight", get("c64", "ours_over_infinity"), ">=", 1.2),
        ("ours/Infinity, 32 inputs/req", get("b32", "ours_over_infinity"), ">=", 1.2),
        ("idle p50 overhead over in-process (ms)", s["idle_overhead_ms"]["embedserve"], "<=", 10.0),
        ("padding efficiency, mixed workload", s["padding_efficiency"], ">=", 0.9),
    ]
    rows = []
    for name, value, op, target in out:
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        row = {"target": name, "value": value, "goal": f"{op} {target}", "met": met}
        # A served/in-process ratio above 1 or a negative overhead means the in-process moment was disturbed
        # (other work on the machine): the comparison says nothing then, and is not counted as met.
        if value is not None and (("in-process" in name and "overhead" not in name and value > 1.0) or value < 0):
            row["met"] = None
            row["invalid"] = "in-process reference measured under heavier load than the service"
        rows.append(row)
    return rows


def _f(x, fmt="{:.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def render_markdown(record: dict) -> str:
    s = record["summary"]
    m = record["machine"]
    lines = [
        f"Run {record['timestamp']} on {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB "
        f"(load average {m['loadavg_at_start'][0]:.1f} at start, {m.get('loadavg_at_end', [0])[0]:.1f} at end); "
        f"`{record['command']}`",
        "",
        "| workload | in-process limit | embedserve | p50 / p99 ms | Infinity | p50 / p99 ms "
        "| ours / in-process | ours / Infinity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        unit = "tok/s" if r["inproc_unit"] == "tokens_per_s" else "inputs/s"
        o, i = r["ours"], r["infinity"]

        def thr(x, unit=unit):
            if not x:
                return "-"
            return f"{x['inputs_per_s']:.0f} inputs/s ({x['tokens_per_s']:.0f} tok/s)"

        lines.append(
            f"| {r['label']} | {_f(r['inproc_limit'])} {unit} | {thr(o)} | {_f(o.get('p50_ms'), '{:.1f}')} / "
            f"{_f(o.get('p99_ms'), '{:.1f}')} | {thr(i)} | {_f(i.get('p50_ms'), '{:.1f}')} / "
            f"{_f(i.get('p99_ms'), '{:.1f}')} | {_f(r['ours_over_inproc'], '{:.2f}')} | "
            f"{_f(r['ours_over_infinity'], '{:.2f}')} |"
        )
    idle = s["idle_p50_ms"]
    over = s["idle_overhead_ms"]
    mem = s["memory"]
    lines += [
        "",
        f"- In-process limit (our engine, no Ray, tokenize + embed, best max_batch_tokens="
        f"{s['inproc_best_max_batch_tokens']}): {_f(s['inproc_limit_inputs_per_s'])} inputs/s; "
        f"32 inputs per call: {_f(s['inproc_32_per_call_inputs_per_s'])} inputs/s; "
        f"sentence-transformers (batch 32): {_f(s['sentence_transformers_inputs_per_s'])} inputs/s.",
        f"- Idle p50 (1 input, 1 in flight): engine {_f(idle['engine'], '{:.1f}')} ms, embedserve "
        f"{_f(idle['embedserve'], '{:.1f}')} ms (+{_f(over['embedserve'], '{:.1f}')}), Infinity "
        f"{_f(idle['infinity'], '{:.1f}')} ms (+{_f(over['infinity'], '{:.1f}')}).",
        f"- Padding efficiency of our engine on the mixed workload (service batches simulated): "
        f"{_f(s['padding_efficiency'], '{:.3f}')} (unsorted batches of 32: "
        f"{_f(record.get('padding', {}).get('unsorted_batches_of_32'), '{:.3f}')}).",
        "- Mean batch our model deployment saw (inputs per batch, from the service's Prometheus metrics): "
        + ", ".join(f"{r['workload']} {_f(r['ours'].get('mean_batch_items'), '{:.1f}')}" for r in s["rows"])
        + f"; live padding efficiency on the mixed workload (mean per batch): "
        f"{_f(s.get('live_padding_efficiency'), '{:.3f}')}.",
        "- Peak memory (PSS, whole process tree): "
        + ", ".join(f"{n} {v['peak_pss_mib']:.0f} MiB (idle {v['idle_pss_mib']:.0f})" for n, v in mem.items())
        + ".",
        "",
        "| target | value | goal | met |",
        "|---|---:|---|---|",
    ]
    for t in s["targets"]:
        met = "-" if t["met"] is None else ("yes" if t["met"] else "**no**")
        if t.get("invalid"):
            met = "not measurable in this run (in-process reference disturbed by other load)"
        lines.append(f"| {t['target']} | {_f(t['value'], '{:.2f}')} | {t['goal']} | {met} |")
    return "\n".join(lines)


# -- PNG ---------------------------------------------------------------------------------------------

SHORT = {
    "c1": "1 input/req, 1 in flight",
    "c16": "1 input/req, 16 in flight",
    "c64": "1 input/req, 64 in flight",
    "b32": "32 inputs/req, 4 in flight",
    "mixed": "mixed 5-500 tok, 64 in flight",
}
COLORS = {"in-process": (150, 150, 150), "embedserve": (31, 119, 180), "infinity": (255, 127, 14)}


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - old pillow
        return ImageFont.load_default()


def render_png(record: dict, path: Path) -> None:
    """Two panels: throughput relative to the in-process limit, and p50 / p99 latency, per workload."""
    from PIL import Image, ImageDraw

    s = record["summary"]
    rows = s["rows"]
    width, height = 1400, 900
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    title, small, tiny = _font(22), _font(15), _font(13)
    m = record["machine"]
    d.text(
        (30, 15),
        f"all-MiniLM-L6-v2 on {m['cpu_model']} ({m['cores']} cores), {record['timestamp']}",
        fill="black",
        font=title,
    )

    def panel(top: int, h: int, heading: str, series: list, fmt: str, ref=None, log=False):
        import math

        left, right = 90, width - 30
        d.text((left, top), heading, fill="black", font=small)
        top += 28
        base = top + h
        vals = [v for _, vs in series for v in vs if v is not None and v > 0] + ([ref] if ref else [])
        if log:
            lo = 10 ** math.floor(math.log10(min(vals))) if vals else 1.0
            hi = 10 ** math.ceil(math.log10(max(vals) * 1.5)) if vals else 10.0

            def ypos(v: float) -> float:
                return base - h * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

            ticks = [lo * 10**k for k in range(round(math.log10(hi / lo)) + 1)]
        else:
            vmax = max(vals) * 1.15 if vals else 1.0

            def ypos(v: float) -> float:
                return base - h * v / vmax

            ticks = [vmax * k / 4 for k in range(5)]
        d.line((left, base, right, base), fill="black")
        d.line((left, top, left, base), fill="black")
        for t in ticks:
            y = ypos(t)
            d.line((left - 5, y, right, y), fill=(230, 230, 230))
            d.text((10, y - 8), fmt.format(t), fill="black", font=tiny)
        if ref:
            y = ypos(ref)
            d.line((left, y, right, y), fill=(200, 0, 0), width=2)
            d.text((left + 8, y - 16), f"in-process limit = {fmt.format(ref)}", fill=(200, 0, 0), font=tiny)
        group_w = (right - left) / max(1, len(rows))
        bar_w = group_w * 0.8 / max(1, len(series))
        for gi, r in enumerate(rows):
            gx = left + gi * group_w + group_w * 0.1
            for si, (name, vs) in enumerate(series):
                v = vs[gi]
                if v is None:
                    continue
                x0 = gx + si * bar_w
                y0 = ypos(v)
                color = COLORS.get(name.split()[0], (100, 100, 100))
                if "p99" in name:
                    color = tuple(min(255, c + 90) for c in color)
                d.rectangle((x0, y0, x0 + bar_w - 4, base), fill=color)
                d.text((x0, y0 - 16), fmt.format(v), fill="black", font=tiny)
            d.text((gx, base + 6), SHORT.get(r["workload"], r["workload"]), fill="black", font=tiny)
        lx = right - 560
        for name, _ in series:
            color = COLORS.get(name.split()[0], (100, 100, 100))
            if "p99" in name:
                color = tuple(min(255, c + 90) for c in color)
            d.rectangle((lx, top - 24, lx + 14, top - 10), fill=color)
            d.text((lx + 20, top - 25), name, fill="black", font=tiny)
            lx += 40 + 8 * len(name)

    def rel(who):
        out = []
        for r in rows:
            x = r.get(f"{who}_over_inproc")
            out.append(x)
        return out

    panel(
        60,
        300,
        "Throughput relative to the in-process limit (inputs/s; mixed: tokens/s); red line = 1.0",
        [("embedserve", rel("ours")), ("infinity", rel("infinity"))],
        "{:.2f}",
        ref=1.0,
    )
    p50o = [r["ours"].get("p50_ms") for r in rows]
    p99o = [r["ours"].get("p99_ms") for r in rows]
    p50i = [r["infinity"].get("p50_ms") for r in rows]
    p99i = [r["infinity"].get("p99_ms") for r in rows]
    panel(
        460,
        340,
        "Latency per request (ms, log scale)",
        [("embedserve p50", p50o), ("embedserve p99", p99o), ("infinity p50", p50i), ("infinity p99", p99i)],
        "{:.0f}",
        log=True,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
