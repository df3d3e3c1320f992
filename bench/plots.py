"""PNG plots of a benchmark run (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from report import med, paired


def plots(res: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loop = res["loop"]
    levels = sorted(loop["worker"], key=int)
    x = range(len(levels))
    names = (("worker", "worker", "tab:blue"), ("vllm", "vLLM server", "tab:orange"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (key, label, color) in enumerate(names):
        vals = [med(loop, key, c, "tokens_per_s") for c in levels]
        ax.bar([j + (i - 0.5) * 0.38 for j in x], vals, 0.38, label=label, color=color)
    ax.set_xticks(list(x), [f"c={c}" for c in levels])
    ax.set_ylabel("output tokens/s (median)")
    ax.set_title("Streaming throughput, tiny gpt-oss on the CPU engine")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)

    tt = res.get("ttft", loop)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    ax = axes[0]
    for i, (name, label, color) in enumerate(names):
        vals = [med(tt, name, c, "ttft_p50_s") * 1e3 for c in levels]
        ax.bar([j + (i - 0.5) * 0.38 for j in x], vals, 0.38, label=label, color=color)
    ax.set_xticks(list(x), [f"c={c}" for c in levels])
    ax.set_title("TTFT p50 (ms)" + (", bursts" if "ttft" in res else ""))
    ax.legend()
    ax = axes[1]
    ratios = {"tok/s (higher is better)": [paired(loop, c, "tokens_per_s") for c in levels],
              "TTFT (lower is better)": [paired(tt, c, "ttft_p50_s") for c in levels],
              "API CPU per token": [paired(loop, c, "api_cpu_ms_per_token") for c in levels]}
    for i, (label, vals) in enumerate(ratios.items()):
        ax.bar([j + (i - 1) * 0.27 for j in x], vals, 0.27, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(x), [f"c={c}" for c in levels])
    ax.set_title("worker ÷ vLLM server (median of paired runs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    st = res["startup"]
    fig, ax = plt.subplots(figsize=(6, 4))
    idx = range(len(st))
    engine = [s["worker_engine_s"] for s in st]
    overhead = [s["worker_overhead_s"] for s in st]
    ax.bar([i - 0.2 for i in idx], engine, 0.38, label="worker: engine phase", color="tab:blue")
    ax.bar([i - 0.2 for i in idx], overhead, 0.38, bottom=engine, label="worker: own overhead",
           color="tab:cyan")
    ax.bar([i + 0.2 for i in idx], [s["vllm_ready_s"] for s in st], 0.38, label="vLLM server",
           color="tab:orange")
    ax.set_xticks(list(idx), [f"start {i + 1}" for i in idx])
    ax.set_ylabel("seconds to ready")
    ax.set_title("Start-up (same engine arguments)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "startup.png", dpi=110)
    plt.close(fig)
