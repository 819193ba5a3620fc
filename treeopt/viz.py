"""Pictures and text views of trees and curves (matplotlib, networkx). No model, no torch."""

from __future__ import annotations

from pathlib import Path

from medusa_runtime.spec import TreeSpec


def tree_text(spec: TreeSpec, probabilities: dict[tuple[int, ...], float] | None = None) -> str:
    """Indented view: one line per node, children under parents, with P(path) when known."""
    children: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for p in spec.paths:
        children.setdefault(p[:-1], []).append(p)
    lines = [f"root ({spec.nodes} nodes, depth {spec.depth})"]

    def walk(node: tuple[int, ...]) -> None:
        for child in sorted(children.get(node, [])):
            prob = f"  p={probabilities[child]:.3f}" if probabilities and child in probabilities else ""
            lines.append(f"{'  ' * len(child)}head {len(child)} rank {child[-1]}{prob}")
            walk(child)

    walk(())
    return "\n".join(lines)


def tree_png(spec: TreeSpec, out: str | Path, probabilities: dict[tuple[int, ...], float] | None = None, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_node(())
    for p in spec.paths:
        graph.add_edge(p[:-1], p)
    # layered layout: leaves spread left to right in depth-first order, parents centred over children
    pos: dict[tuple[int, ...], tuple[float, float]] = {}
    next_x = [0.0]

    def place(node: tuple[int, ...]) -> float:
        kids = sorted(graph.successors(node))
        if not kids:
            x = next_x[0]
            next_x[0] += 1.0
        else:
            xs = [place(k) for k in kids]
            x = sum(xs) / len(xs)
        pos[node] = (x, -len(node))
        return x

    place(())
    width = max(6.0, min(40.0, next_x[0] * 0.45))
    fig, ax = plt.subplots(figsize=(width, 1.6 + 1.3 * max(spec.depth, 1)))
    labels, colors = {}, []
    for node in graph.nodes:
        p = probabilities.get(node) if probabilities else None
        labels[node] = "root" if not node else f"r{node[-1]}" + (f"\n{p:.2f}" if p is not None else "")
        colors.append(1.0 if not node else (p if p is not None else 0.5))
    nx.draw_networkx(graph, pos, ax=ax, labels=labels, node_color=colors, cmap="viridis", vmin=0, vmax=1,
                     node_size=520, font_size=7, font_color="white", arrows=False, edge_color="#999")
    for d in range(1, spec.depth + 1):
        ax.text(-1.2, -d, f"head {d}", ha="right", va="center", fontsize=8)
    ax.set_title(title or f"{spec.nodes}-node Medusa tree (label: head rank, P(path accepted))", fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def curve_png(rows: list[dict], out: str | Path, chosen: int | None = None, baseline_tokens_per_s: float | None = None) -> None:
    """Predicted tokens/step, step latency and tokens/s against tree nodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [r["nodes"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(nodes, [r["tokens_per_step"] for r in rows], marker=".")
    axes[0].set_ylabel("predicted tokens / step")
    axes[1].plot(nodes, [r["latency_ms"] for r in rows], marker=".", color="tab:orange")
    axes[1].set_ylabel("verify step latency (ms)")
    axes[2].plot(nodes, [r["tokens_per_s"] for r in rows], marker=".", color="tab:green")
    axes[2].set_ylabel("predicted tokens / s")
    if baseline_tokens_per_s:
        axes[2].axhline(baseline_tokens_per_s, color="gray", linestyle="--", label="plain decoding")
        axes[2].legend()
    for ax in axes:
        ax.set_xlabel("tree nodes (tokens per verify step)")
        ax.set_xscale("log", base=2)
        if chosen:
            ax.axvline(chosen, color="red", linestyle=":")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
