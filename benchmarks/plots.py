"""PNG figures for BENCHMARKS.md, drawn from the suite's results (matplotlib, `dev` extra).

Each figure carries the command that produced its numbers in its title line.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.markdown import pyplot, save_figure
from benchmarks.report import swept


def make_plots(data: dict, outdir: Path, relative_to: Path, command: str = "python -m benchmarks") -> dict[str, str]:
    """Draw what the results allow; returns {figure name: path relative to `relative_to`}.
    No figures (an empty dict) when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return {}
    made = {}
    speeds = swept(data)
    if speeds:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name, speed in sorted(speeds.items()):
            rows = sorted(speed["rows"], key=lambda r: r["loops"])
            model, q = name.split("/")
            ax.plot([r["loops"] for r in rows], [r["decode_tps"] for r in rows], marker="o",
                    label=f"{model} {q.upper()}")
        ax.set_xlabel("loops T")
        ax.set_ylabel("decode tok/s (median)")
        ax.set_xticks(range(1, max(s["loops"] for s in speeds.values()) + 1))
        ax.set_title(f"Decode speed vs loops (benchmarks.gguf_speed)\n{command}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        made["loops"] = save_figure(fig, outdir / "decode_vs_loops.png", relative_to)
    exits = {k.removesuffix("/exit"): v for k, v in data.items() if k.endswith("/exit")}
    for name, ex in exits.items():
        rows = {r["label"]: r for r in ex["skip"]}
        select = rows["select"]
        skip = sorted((r for label, r in rows.items() if label.startswith("skip k=")), key=lambda r: r["loops"])
        ks = [r["loops"] for r in skip] + [select["loops"]]
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.plot(ks, [r["decode_tps"] for r in skip] + [rows["skip q=1.0"]["decode_tps"]], marker="o",
                label="skip mode, exit after loop k (k = T: threshold 1.0)")
        ax.axhline(select["decode_tps"], color="gray", linestyle="--", label="select mode (all loops)")
        ax.plot(ks, [select["decode_tps"] * select["loops"] / k for k in ks], color="gray", linestyle=":",
                label="ideal: select × T/k")
        model, q = name.split("/")
        ax.set_xlabel("exit loop k")
        ax.set_ylabel("decode tok/s (median)")
        ax.set_xticks(ks)
        ax.set_title(f"Skip-mode early exit, {model} {q.upper()} (benchmarks.exit_speed)\n{command}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        made["skip"] = save_figure(fig, outdir / "skip_exit.png", relative_to)
    return made
