"""Pictures and text views of trees and curves (matplotlib). No model, no torch."""

from __future__ import annotations

import math
from pathlib import Path

from medusa_runtime.spec import TreeSpec


def children_of(spec: TreeSpec) -> dict[tuple[int, ...], list[tuple[int, ...]]]:
    """Each node's children, in rank order (the root is ())."""
    children: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for p in spec.paths:
        children.setdefault(p[:-1], []).append(p)
    return {node: sorted(kids) for node, kids in children.items()}


def tree_text(spec: TreeSpec, probabilities: dict[tuple[int, ...], float] | None = None) -> str:
    """Indented view: one line per node, children under parents, with P(path) when known."""
    children = children_of(spec)
    lines = [f"root ({spec.nodes} nodes, depth {spec.depth})"]

    def walk(node: tuple[int, ...]) -> None:
        for child in children.get(node, []):
            prob = f"  p={probabilities[child]:.3f}" if probabilities and child in probabilities else ""
            lines.append(f"{'  ' * len(child)}head {len(child)} rank {child[-1]}{prob}")
            walk(child)

    walk(())
    return "\n".join(lines)


# layout constants of tree_png, in inches (figure sizes follow the layout's extent, never a fixed canvas)
_COL_MAX_IN = 0.6     # width of one leaf column when there is room
_ROW_MAX_IN = 0.9     # height of one depth level when there is room
_MAX_WIDTH_IN = 30.0  # widest figure (3300 px at 110 dpi); wider trees get narrower columns and smaller nodes
_MAX_HEIGHT_IN = 16.0  # tallest figure (1760 px); deeper trees get lower rows
_ROW_PAD = 0.3        # rows of space above the root and below the deepest nodes (a node's radius is 0.225 rows)
_LEFT_IN, _RIGHT_IN, _TOP_IN, _BOTTOM_IN = 0.85, 0.2, 0.4, 0.1  # head labels, right edge, title, bottom edge
_DPI = 110


def tree_layout(spec: TreeSpec) -> tuple[dict[tuple[int, ...], tuple[float, int]], int]:
    """Layered layout: leaves one column each, left to right in depth-first rank order, parents centred over
    their children; x is in columns (leaf i at i + 0.5), y is the depth. Returns (positions, columns)."""
    children = children_of(spec)
    pos: dict[tuple[int, ...], tuple[float, int]] = {}
    next_col = [0]

    def place(node: tuple[int, ...]) -> float:  # recursion depth = tree depth (a few heads), never deep
        kids = children.get(node, [])
        if kids:
            xs = [place(k) for k in kids]
            x = (xs[0] + xs[-1]) / 2
        else:
            x = next_col[0] + 0.5
            next_col[0] += 1
        pos[node] = (x, len(node))
        return x

    place(())
    return pos, next_col[0]


def tree_figure(spec: TreeSpec, probabilities: dict[tuple[int, ...], float] | None = None, title: str = ""):
    """The tree as a matplotlib Figure sized from its layout: every node, label and the title inside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    pos, columns = tree_layout(spec)
    depth = spec.depth
    col_in = min(_COL_MAX_IN, (_MAX_WIDTH_IN - _LEFT_IN - _RIGHT_IN) / columns)
    row_in = min(_ROW_MAX_IN, (_MAX_HEIGHT_IN - _TOP_IN - _BOTTOM_IN) / (depth + 2 * _ROW_PAD))
    plot_w, plot_h = columns * col_in, (depth + 2 * _ROW_PAD) * row_in
    diameter_pt = 72 * min(0.8 * col_in, 0.45 * row_in)
    font = min(7.0, diameter_pt * 0.3)
    cmap = plt.get_cmap("viridis")

    fig = plt.figure(dpi=_DPI)
    title = title or f"{spec.nodes}-node Medusa tree (label: head rank" + (", P(path accepted))" if probabilities else ")")
    title_artist = fig.text(0.5, 1.0, title, ha="center", va="top", fontsize=10)
    renderer = fig.canvas.get_renderer()
    title_w = title_artist.get_window_extent(renderer).width / _DPI
    left_in = _LEFT_IN if depth else _RIGHT_IN  # room for the head labels
    width = max(left_in + plot_w + _RIGHT_IN, min(_MAX_WIDTH_IN, title_w + 0.4))
    height = _TOP_IN + plot_h + _BOTTOM_IN
    width, height = math.ceil(width * _DPI) / _DPI, math.ceil(height * _DPI) / _DPI  # whole pixels
    fig.set_size_inches(width, height)
    if title_w + 0.4 > width:  # only a title longer than 30 inches: wrap it rather than cut it
        title_artist.set_wrap(True)
    title_artist.set_y(1 - 0.1 / height)
    # the tree centred under the title where the head labels leave room, else just right of them
    left = min(max(left_in, (width - plot_w) / 2), width - _RIGHT_IN - plot_w)
    ax = fig.add_axes((left / width, _BOTTOM_IN / height, plot_w / width, plot_h / height))
    ax.set_xlim(0, columns)
    ax.set_ylim(depth + _ROW_PAD, -_ROW_PAD)
    ax.axis("off")

    nodes = [()] + list(spec.paths)
    ax.add_collection(LineCollection([[pos[p[:-1]], pos[p]] for p in spec.paths], colors="#999", linewidths=1, zorder=1))
    values = []
    for node in nodes:
        p = probabilities.get(node) if probabilities and node else None
        values.append(1.0 if not node else (p if p is not None else 0.5))
    ax.scatter([pos[n][0] for n in nodes], [pos[n][1] for n in nodes], s=diameter_pt ** 2, c=[cmap(v) for v in values],
               zorder=2, linewidths=0)
    if font >= 3.5:  # smaller text is unreadable: very wide trees show coloured nodes only
        for node, value in zip(nodes, values):
            p = probabilities.get(node) if probabilities and node else None
            label = "root" if not node else f"r{node[-1]}" + (f"\n{p:.2f}" if p is not None else "")
            ax.text(*pos[node], label, ha="center", va="center", fontsize=font if node else min(font, 6.0),
                    color="black" if value > 0.6 else "white", zorder=3)
    head_font = min(8.0, 0.6 * 72 * row_in)
    every = max(1, math.ceil(4.0 / head_font))  # rows too low for readable labels: label every n-th head
    for d in range(every, depth + 1, every):
        ax.annotate(f"head {d}", xy=(0, d), xycoords=("axes fraction", "data"), xytext=(-8, 0),
                    textcoords="offset points", ha="right", va="center", fontsize=max(head_font, 4.0))
    return fig


def tree_png(spec: TreeSpec, out: str | Path, probabilities: dict[tuple[int, ...], float] | None = None, title: str = "") -> None:
    """Draw the tree to a PNG: nodes labelled with their head rank (and P(path) when known), one row per head."""
    import matplotlib.pyplot as plt

    fig = tree_figure(spec, probabilities, title)
    fig.savefig(out, dpi=_DPI)
    plt.close(fig)


def trees_png(trees: list[tuple[TreeSpec, dict[tuple[int, ...], float] | None]], out: str | Path, gap_in: float = 0.3) -> None:
    """Several trees (each with its P(path) labels or None) side by side in one PNG, tops aligned, on white; each
    titled with its size, the sampling settings (and draft rule) it was calibrated for and its predicted tokens/step."""
    import io

    import matplotlib.pyplot as plt
    import numpy as np

    from medusa_runtime.sampling import describe_drafts, describe_settings

    images = []
    for spec, probabilities in trees:
        predicted = spec.meta.get("expected_tokens_per_step")
        drafts = (spec.meta.get("stats_provenance") or {}).get("drafts") or {}
        title = (f"{spec.nodes} nodes, {describe_settings(spec.meta.get('sampling'))}"
                 + (f", {describe_drafts(drafts)}" if spec.meta.get("sampling", {}).get("temperature") and drafts else "")
                 + (f": {predicted:.3f} tokens/step" if predicted is not None else ""))
        fig = tree_figure(spec, probabilities, title)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
        plt.close(fig)
        buffer.seek(0)
        images.append(plt.imread(buffer)[..., :3])  # [H, W, 3] floats in 0..1
    height = max(image.shape[0] for image in images)
    gap = np.ones((height, int(gap_in * _DPI), 3))
    columns = []
    for i, image in enumerate(images):
        padded = np.ones((height, image.shape[1], 3))
        padded[: image.shape[0]] = image
        columns += [gap, padded] if i else [padded]
    plt.imsave(out, np.concatenate(columns, axis=1))


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


def plan_png(rows: list[dict], out: str | Path, measured: dict[int, dict[str, float]] | None = None) -> None:
    """Left: predicted tokens/s against batch size, the planned Medusa tree (nodes annotated) and plain decoding.
    Right: the planned tree's speedup over plain decoding. ``rows``: ``BatchPlan.to_json()["rows"]``;
    ``measured`` (optional): batch size -> {"medusa", "plain"} measured tok/s, drawn as crosses, and where they differ
    from the plan's own figures (a sweep of a finite queue under continuous batching), the sweep's predictions for that
    queue ({"medusa_predicted", "plain_predicted"}) as open markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["batch_size"] for r in rows]
    fig, (ax, ratio) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot(sizes, [r["tokens_per_s"] for r in rows], marker="o", color="tab:green", label="Medusa, planned tree (predicted)")
    ax.plot(sizes, [r["plain_tokens_per_s"] for r in rows], marker="s", color="gray", linestyle="--", label="plain decoding (predicted)")
    for r in rows:
        ax.annotate(f"{r['nodes']}", (r["batch_size"], r["tokens_per_s"]), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=8)
    ratio.plot(sizes, [r["speedup"] for r in rows], marker="o", color="tab:green", label="predicted")
    ratio.axhline(1.0, color="gray", linestyle="--")
    if measured:
        b = sorted(measured)
        ax.plot(b, [measured[x]["medusa"] for x in b], "x", color="tab:green", markersize=9, label="Medusa, measured")
        ax.plot(b, [measured[x]["plain"] for x in b], "x", color="black", markersize=9, label="plain, measured")
        queued = [x for x in b if "medusa_predicted" in measured[x]]
        planned = {r["batch_size"]: r["tokens_per_s"] for r in rows}
        if any(x in planned and abs(measured[x]["medusa_predicted"] / planned[x] - 1) > 0.005 for x in queued):
            # the sweep predicted for the queue it measured (a burst drains at its end): those predictions beside the crosses
            ax.plot(queued, [measured[x]["medusa_predicted"] for x in queued], "o", mfc="none", color="tab:green", markersize=9,
                    label="Medusa, predicted for the measured queue")
            ax.plot(queued, [measured[x]["plain_predicted"] for x in queued], "s", mfc="none", color="black", markersize=8,
                    label="plain, predicted for the measured queue")
        ratio.plot(b, [measured[x]["medusa"] / measured[x]["plain"] for x in b], "x", color="black", markersize=9, label="measured")
    for axis in (ax, ratio):
        axis.set_xscale("log", base=2)
        axis.set_xticks(sizes, [str(s) for s in sizes])
        axis.set_xlabel("batch size (sequences decoded together)")
        axis.legend(fontsize=8)
    ax.set_ylabel("tokens / s, whole batch")
    ax.set_title("planned tree nodes per batch size (labels)", fontsize=9)
    ratio.set_ylabel("planned tree / plain decoding")
    ratio.set_title("speedup of the planned tree (1.0: plain decoding is planned)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
