"""Latency profiles: the JSON ``treeopt profile`` writes, read and checked, and step and prefill times interpolated
over tree size (``LatencyProfile``) and batch size (``BatchLatency``). Pure Python, no torch; it neither times nor
chooses anything (``choice.py`` chooses trees from these times).

The latency between measured tree sizes is interpolated linearly (beyond the largest measured size it is
extrapolated from the last two points); between profiled batch sizes likewise.

Two readings of one profile, each with one use:

- sizes are chosen by each size's 10th-percentile time (``p10_ms``, ``LatencyProfile.statistic``): on a shared machine
  the noise is time stolen by other work, which only ever adds, so a low quantile estimates what the step itself
  costs. On this project's CPU, medians over 20 round-robin repeats put 6- and 8-node steps within 1% of each other
  in one profile and picked 8 nodes, which then decoded 1.22-1.32x over ``generate``; the same profile read by 10th
  percentiles picks 4 nodes, which decoded 1.35-1.36x (``treeopt sweep`` agrees: 4-6 nodes are fastest there).
- tokens/s are predicted from medians (``LatencyProfile.typical``), everywhere (``build``, ``plan``, ``demo``,
  ``sweep``): the stolen time is real for whoever runs there, and a low quantile's optimism grows with the spread of
  the timings, which grows with the batch size (2026-12-02, [docs/results.md](../docs/results.md#where-the-plan-was-optimistic):
  by 10th percentiles the static plan read +8% to +33% high at batch 4 and 8, by medians -6% to +16%).

Files without ``p10_ms`` are read by medians for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medusa_runtime.files import is_int, is_positive_number, json_type, read_json_object

LATENCY_FORMAT = "medusa-latency"
# tree sizes ``treeopt profile`` times by default: every size up to 8, since GEMM kernels switch blocking in
# the first rows (on this project's CPU 3-6 rows cost less than 1-2) and that end cannot be interpolated
PROFILE_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


@dataclass
class LatencyProfile:
    device: str
    dtype: str
    sizes: list[int]  # tree tokens per verify step
    step_ms: list[float]  # the cost of one verify step at each size (``statistic`` of its timings)
    plain_step_ms: float  # one plain decoding step (1 token, no heads), same statistic
    meta: dict
    statistic: str = "p10_ms"
    batch_size: int = 1  # sequences decoded together in each timed step
    prefill: list[tuple[int, float]] = field(default_factory=list)  # (prompt tokens, ms) of a batch's prefill; [] if not profiled
    medians: "LatencyProfile | None" = None  # the same profile read by medians (None: this one is), see ``typical``

    def typical(self) -> "LatencyProfile":
        """The profile by median times: what a run on this machine sees, time stolen by other work included, and so
        what throughput is predicted from (``plan.py``); the low quantile (``statistic``) is what sizes are chosen by."""
        return self.medians or self

    def prefill_ms(self, tokens: int) -> float | None:
        """A batch prefill of prompts up to ``tokens`` long, linear in the length through the profiled points (None: not profiled)."""
        if not self.prefill:
            return None
        if len(self.prefill) == 1:
            (x, y), = self.prefill
            return y * tokens / x
        (x0, y0), (x1, y1) = self.prefill[0], self.prefill[-1]
        return max(0.0, y0 + (y1 - y0) * (tokens - x0) / (x1 - x0))

    def at(self, nodes: float) -> float:
        """Verify-step latency (ms) at ``nodes`` tree tokens, linearly interpolated."""
        xs, ys = self.sizes, self.step_ms
        if len(xs) == 1:
            return ys[0]
        if nodes <= xs[0]:
            return ys[0]
        for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
            if nodes <= x1:
                return y0 + (y1 - y0) * (nodes - x0) / (x1 - x0)
        (x0, y0), (x1, y1) = (xs[-2], ys[-2]), (xs[-1], ys[-1])
        return y1 + max(0.0, (y1 - y0) / (x1 - x0)) * (nodes - x1)


def _read_latency(path: Path) -> dict:
    data = read_json_object(path, "latency", f"make one with 'treeopt profile --out {path}'")
    if data.get("format") != LATENCY_FORMAT:
        raise ValueError(f"{path}: field 'format' must be {LATENCY_FORMAT!r}; is this a 'treeopt profile' output?")
    return data


def _batch_entries(path: Path, data: dict) -> dict[int, dict]:
    """batch size -> its entry ({"plain_step", "verify"}); files without "batches" (version 1) hold batch 1 only."""
    if "batches" not in data:
        return {1: data}
    batches = data["batches"]
    redo = "re-run 'treeopt profile --batch-sizes ...'"
    if not isinstance(batches, list) or not batches or not all(isinstance(b, dict) for b in batches):
        raise ValueError(f"{path}: field 'batches' must be a non-empty list of objects (one per batch size); {redo}")
    entries: dict[int, dict] = {}
    for i, entry in enumerate(batches):
        b = entry.get("batch_size")
        if not is_int(b) or b < 1:
            raise ValueError(f"{path}: field 'batches[{i}].batch_size' must be an integer >= 1, got {b!r}; {redo}")
        if b in entries:
            raise ValueError(f"{path}: field 'batches' lists batch size {b} twice; {redo}")
        entries[b] = entry
    return entries


def latency_batch_sizes(path: str | Path) -> list[int]:
    """The batch sizes a latency file holds, smallest first."""
    path = Path(path)
    return sorted(_batch_entries(path, _read_latency(path)))


def load_latency_batches(path: str | Path, batch_size: int = 1) -> dict[int, "LatencyProfile"]:
    """batch size -> its profile, for every batch size the latency file holds (``load_latency`` each); ValueError naming
    the file and the command to re-run when ``batch_size`` is not among them."""
    sizes = latency_batch_sizes(path)
    if batch_size not in sizes:
        load_latency(path, batch_size)  # raises: no batch size ``batch_size`` (profiled: ...); re-run ...
    return {b: load_latency(path, b) for b in sizes}


def load_latency(path: str | Path, batch_size: int = 1) -> LatencyProfile:
    """Read one batch size's profile from a latency file and check the fields ``LatencyProfile.at`` and
    the choice computes with."""
    path = Path(path)
    data = _read_latency(path)
    entries = _batch_entries(path, data)
    if batch_size not in entries:
        raise ValueError(f"{path}: field 'batches' has no batch size {batch_size} (profiled: {', '.join(map(str, sorted(entries)))}); "
                         f"re-run 'treeopt profile --batch-sizes {','.join(map(str, sorted(set(entries) | {batch_size})))}'")
    entry = entries[batch_size]
    where = "" if entry is data else f"batches[batch_size={batch_size}]."
    redo = "re-run 'treeopt profile'"
    if "verify" not in entry or "plain_step" not in entry:
        raise ValueError(f"{path}: fields '{where}verify' and '{where}plain_step' are required; {redo}")
    rows, plain = entry["verify"], entry["plain_step"]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: field '{where}verify' must be a non-empty list of objects (one per tree size); {redo}")
    if not isinstance(plain, dict):
        raise ValueError(f"{path}: field '{where}plain_step' must be an object, got a {json_type(plain)}; {redo}")
    for i, row in enumerate(rows):
        if not is_int(row.get("nodes")) or row["nodes"] < 1:
            raise ValueError(f"{path}: field '{where}verify[{i}].nodes' must be a tree size (an integer >= 1), got {row.get('nodes')!r}; {redo}")
    rows = sorted(rows, key=lambda r: r["nodes"])
    for a, b in zip(rows, rows[1:]):
        if a["nodes"] == b["nodes"]:
            raise ValueError(f"{path}: field '{where}verify' lists tree size {a['nodes']} twice; keep one row per size or {redo}")
    stat = "p10_ms" if all("p10_ms" in r for r in [*rows, plain]) else "median_ms"
    for label, row in [*((f"{where}verify[nodes={r['nodes']}]", r) for r in rows), (f"{where}plain_step", plain)]:
        if not is_positive_number(row.get(stat)):
            raise ValueError(f"{path}: field '{label}.{stat}' must be a positive number of milliseconds, got {row.get(stat)!r}; {redo}")
    prefill = entry.get("prefill", [])
    if not isinstance(prefill, list) or not all(isinstance(p, dict) and is_int(p.get("tokens")) and p["tokens"] >= 1
                                                and is_positive_number(p.get(stat)) for p in prefill):
        raise ValueError(f"{path}: field '{where}prefill' must list objects with 'tokens' (>= 1) and '{stat}' (ms); {redo}")
    def read(by: str) -> LatencyProfile:
        return LatencyProfile(
            device=str(data.get("device", "?")), dtype=str(data.get("dtype", "?")), sizes=[r["nodes"] for r in rows],
            step_ms=[r[by] for r in rows], plain_step_ms=plain[by],
            meta={k: v for k, v in data.items() if k not in ("verify", "plain_step", "batches")}, statistic=by,
            batch_size=batch_size, prefill=sorted((p["tokens"], p[by]) for p in prefill),
        )

    profile = read(stat)
    if stat != "median_ms" and all(is_positive_number(r.get("median_ms")) for r in [*rows, plain, *prefill]):
        profile.medians = read("median_ms")
    return profile


@dataclass
class BatchLatency:
    """Verify-step and prefill latency over (batch size, tree nodes), from a profile holding several batch sizes."""

    profiles: dict[int, LatencyProfile]

    def step_ms(self, batch: int, nodes: int) -> float:
        """Step time of ``batch`` rows with an ``nodes``-node tree (1: a plain step), linear between profiled batch sizes."""
        return self._along_batch(lambda p: p.plain_step_ms if nodes == 1 else p.at(nodes), batch)

    def typical(self) -> "BatchLatency":
        """The same profiles read by medians (``LatencyProfile.typical``): what throughput is predicted from."""
        return BatchLatency({b: p.typical() for b, p in self.profiles.items()})

    @property
    def statistic(self) -> str:
        """Which timing of the profile these times are (p10_ms or median_ms)."""
        return next(iter(self.profiles.values())).statistic

    @property
    def device(self) -> str:
        return next(iter(self.profiles.values())).device

    @property
    def largest_tree(self) -> int:
        """The largest tree every batch size was timed at (nodes)."""
        return min(p.sizes[-1] for p in self.profiles.values())

    @property
    def has_prefill(self) -> bool:
        return all(p.prefill for p in self.profiles.values())

    def prefill_ms(self, batch: int, tokens: int) -> float:
        """A prefill of ``batch`` prompts padded to ``tokens``, linear between profiled batch sizes (0 if not profiled)."""
        return self._along_batch(lambda p: p.prefill_ms(tokens), batch) if self.has_prefill else 0.0

    def _along_batch(self, at, batch: int) -> float:
        """``at(profile)`` at ``batch`` rows: the smallest profile below it, linear between profiled batch sizes, and
        beyond the largest the last two sizes' slope (never decreasing)."""
        sizes = sorted(self.profiles)
        value = {b: at(self.profiles[b]) for b in sizes}
        if batch <= sizes[0]:
            return value[sizes[0]]
        b0, b1 = next(((x, y) for x, y in zip(sizes, sizes[1:]) if batch <= y), (sizes[-2], sizes[-1]) if len(sizes) > 1 else (sizes[0], sizes[0]))
        if b1 == b0:
            return value[b1]
        slope = (value[b1] - value[b0]) / (b1 - b0)
        return value[b0] + slope * (batch - b0) if batch <= b1 else value[b1] + max(0.0, slope) * (batch - b1)
