"""The tree picture shows the whole tree and its title at every size: checked with matplotlib's own renderer."""

from __future__ import annotations

import heapq
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from medusa_runtime.spec import TreeSpec  # noqa: E402
from treeopt.viz import tree_png, tree_text  # noqa: E402

TOL = 1.0  # pixels


def built_tree(nodes: int, depth: int = 4, ranks: int = 10) -> tuple[TreeSpec, dict]:
    """A tree shaped like a built one: paths added best first, P(path) = product of 0.6 / (rank + 1) per level."""
    prob = {(): 1.0}
    heap = [(-0.6, (0,))]
    paths = []
    while heap and len(paths) < nodes - 1:
        neg, path = heapq.heappop(heap)
        paths.append(path)
        prob[path] = -neg
        if path[-1] + 1 < ranks:  # next sibling
            sib = path[:-1] + (path[-1] + 1,)
            heapq.heappush(heap, (-prob[path[:-1]] * 0.6 / (sib[-1] + 1), sib))
        if len(path) < depth:  # first child
            heapq.heappush(heap, (-prob[path] * 0.6, path + (0,)))
    spec = TreeSpec(paths)
    assert spec.nodes == nodes
    return spec, {p: prob[p] for p in paths}


def wide_tree(nodes: int) -> TreeSpec:
    """The widest tree of its size: every path a rank of head 1."""
    return TreeSpec([(r,) for r in range(nodes - 1)])


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """Calls tree_png and returns the figure it saved (caught at savefig, so any implementation is checked)."""
    saved = []
    original = Figure.savefig

    def spy(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)

    def draw(spec, probabilities=None, title=""):
        out = tmp_path / f"tree{spec.nodes}.png"
        tree_png(spec, out, probabilities, title)
        assert out.stat().st_size > 0
        assert len(saved) == 1
        fig = saved.pop()
        FigureCanvasAgg(fig).draw()  # plt.close detached the figure from its canvas
        return fig, out

    yield draw
    plt.close("all")


def inside(inner, outer, tol=TOL) -> bool:
    return (inner.x0 >= outer.x0 - tol and inner.y0 >= outer.y0 - tol
            and inner.x1 <= outer.x1 + tol and inner.y1 <= outer.y1 + tol)


def node_circles(fig):
    """(x, y, radius) in display pixels of every node marker."""
    circles = []
    for ax in fig.axes:
        for coll in ax.collections:
            if isinstance(coll, PathCollection) and len(coll.get_sizes()):
                sizes = coll.get_sizes()
                for i, (x, y) in enumerate(coll.get_offset_transform().transform(coll.get_offsets())):
                    r = math.sqrt(sizes[i % len(sizes)]) / 2 * fig.dpi / 72
                    circles.append((x, y, r, coll.get_clip_on() and coll.get_clip_box() or None))
    return circles


def check_nothing_clipped(fig, spec, title_part):
    renderer = fig.canvas.get_renderer()
    fig_box = fig.bbox
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert any(title_part in t.get_text() for t in texts), "no title"
    for t in texts:
        ext = t.get_window_extent(renderer)
        assert inside(ext, fig_box), f"text {t.get_text()!r} at {ext} outside the figure {fig_box}"
    heads = {t.get_text() for t in texts if t.get_text().startswith("head ")}
    if spec.depth <= 8:
        assert heads == {f"head {d}" for d in range(1, spec.depth + 1)}
    else:  # rows too low for a label each
        assert heads and heads <= {f"head {d}" for d in range(1, spec.depth + 1)}

    circles = node_circles(fig)
    assert len(circles) == spec.nodes, "every node drawn once"
    for x, y, r, clip in circles:
        for box in [fig_box] + ([clip] if clip is not None else []):
            assert box.x0 - TOL <= x - r and x + r <= box.x1 + TOL and box.y0 - TOL <= y - r and y + r <= box.y1 + TOL, \
                f"node at ({x:.0f}, {y:.0f}) r={r:.1f} cut by {box}"
    # nodes of one row do not overlap
    rows: dict[int, list[tuple[float, float]]] = {}
    for x, y, r, _ in circles:
        rows.setdefault(round(y), []).append((x, r))
    for row in rows.values():
        row.sort()
        for (x0, r0), (x1, r1) in zip(row, row[1:]):
            assert x1 - x0 >= (r0 + r1) * 0.99, "overlapping nodes"
    # the drawing fills its canvas: no large empty margins
    exts = [t.get_window_extent(renderer) for t in texts]
    exts += [c.get_window_extent(renderer) for ax in fig.axes for c in ax.collections if not isinstance(c, PathCollection)]
    x0 = min([e.x0 for e in exts] + [x - r for x, _, r, _ in circles])
    x1 = max([e.x1 for e in exts] + [x + r for x, _, r, _ in circles])
    y0 = min([e.y0 for e in exts] + [y - r for _, y, r, _ in circles])
    y1 = max([e.y1 for e in exts] + [y + r for _, y, r, _ in circles])
    assert x1 - x0 >= 0.6 * fig_box.width, f"content spans {x1 - x0:.0f} of {fig_box.width:.0f} px"
    assert y1 - y0 >= 0.6 * fig_box.height, f"content spans {y1 - y0:.0f} of {fig_box.height:.0f} px"
    # sane size for any tree
    assert fig_box.width <= 30 * 110 + 1 and fig_box.height <= 16 * 110 + 1


@pytest.mark.parametrize("nodes", [1, 2, 4, 6, 64, 256])
def test_built_tree_fully_visible(drawn, nodes):
    spec, probabilities = built_tree(nodes)
    fig, _ = drawn(spec, probabilities)
    check_nothing_clipped(fig, spec, f"{nodes}-node")


@pytest.mark.parametrize("nodes", [4, 64, 256])
def test_unlabelled_and_wide_trees_fully_visible(drawn, nodes):
    fig, _ = drawn(wide_tree(nodes))
    check_nothing_clipped(fig, wide_tree(nodes), f"{nodes}-node")
    spec, _ = built_tree(nodes)
    fig, _ = drawn(spec)  # no probabilities
    check_nothing_clipped(fig, spec, f"{nodes}-node")


@pytest.mark.parametrize("nodes", [9, 64, 256])
def test_deep_chain_fully_visible(drawn, nodes):
    spec = TreeSpec([(0,) * d for d in range(1, nodes)])
    fig, _ = drawn(spec)
    check_nothing_clipped(fig, spec, f"{nodes}-node")


def test_custom_long_title_fully_visible(drawn):
    spec, probabilities = built_tree(2)
    title = "a long custom title that is much wider than the two nodes of this tree, from treeopt show"
    fig, _ = drawn(spec, probabilities, title)
    check_nothing_clipped(fig, spec, "a long custom title")


def test_png_has_figure_size(drawn):
    spec, probabilities = built_tree(6)
    fig, out = drawn(spec, probabilities)
    import matplotlib.image as mpimg

    height, width = mpimg.imread(out).shape[:2]
    assert abs(width - fig.bbox.width) <= 1 and abs(height - fig.bbox.height) <= 1


def test_tree_text_lists_every_node():
    spec, probabilities = built_tree(6)
    text = tree_text(spec, probabilities)
    assert text.splitlines()[0] == f"root (6 nodes, depth {spec.depth})"
    assert len(text.splitlines()) == spec.nodes
