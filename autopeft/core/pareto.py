"""Pareto analysis in pure Python: dominance, non-dominated sorting, hypervolume.

Points are sequences of floats; ``directions`` says per objective whether larger
(``"maximize"``) or smaller (``"minimize"``) is better. Internally everything is turned
into minimisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Point = Sequence[float]


def _signs(directions: Sequence[str]) -> list[float]:
    return [-1.0 if d == "maximize" else 1.0 for d in directions]


def to_min(points: Sequence[Point], directions: Sequence[str]) -> list[list[float]]:
    """Points as minimisation problems (maximised objectives negated)."""
    signs = _signs(directions)
    return [[s * v for s, v in zip(signs, p)] for p in points]


def dominates(a: Point, b: Point) -> bool:
    """Whether ``a`` dominates ``b`` (both minimised): no worse anywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def nondominated_ranks(points: Sequence[Point], directions: Sequence[str]) -> list[int]:
    """Front index of every point (0 = the Pareto front), by repeated peeling."""
    pts = to_min(points, directions)
    ranks = [-1] * len(pts)
    remaining = set(range(len(pts)))
    rank = 0
    while remaining:
        front = {
            i for i in remaining if not any(dominates(pts[j], pts[i]) for j in remaining if j != i)
        }
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def pareto_front(points: Sequence[Point], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points."""
    return [i for i, r in enumerate(nondominated_ranks(points, directions)) if r == 0]


def dominated_by_count(point: Point, peers: Sequence[Point], directions: Sequence[str]) -> int:
    """How many ``peers`` dominate ``point``."""
    p, *others = to_min([point, *peers], directions)
    return sum(dominates(o, p) for o in others)


def hypervolume(points: Sequence[Point], reference: Point, directions: Sequence[str]) -> float:
    """Exact hypervolume dominated by ``points`` up to ``reference`` (1, 2 or 3 objectives).

    The reference point is in the objectives' own units and must be worse than the points
    that count (points not strictly better than it in every objective add nothing).
    """
    ref = to_min([reference], directions)[0]
    pts = [p for p in to_min(points, directions) if all(x < r for x, r in zip(p, ref))]
    if not pts:
        return 0.0
    dim = len(ref)
    if dim == 1:
        return ref[0] - min(p[0] for p in pts)
    if dim == 2:
        return _hv2(pts, ref)
    if dim == 3:
        # Slice along the third objective: between consecutive z values the dominated area
        # is the 2-D hypervolume of the points at or below that z.
        pts.sort(key=lambda p: p[2])
        total = 0.0
        for i, p in enumerate(pts):
            z_next = pts[i + 1][2] if i + 1 < len(pts) else ref[2]
            if z_next > p[2]:
                total += _hv2([q[:2] for q in pts[: i + 1]], ref[:2]) * (z_next - p[2])
        return total
    raise ValueError(f"exact hypervolume supports 1-3 objectives, got {dim}")


def _hv2(pts: Sequence[Point], ref: Point) -> float:
    area, best_y = 0.0, ref[1]
    for x, y in sorted((p[0], p[1]) for p in pts):
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return area


def hypervolume_history(
    points: Sequence[Point | None], reference: Point, directions: Sequence[str]
) -> list[float]:
    """Hypervolume after each trial in order (``None`` entries: trials without values)."""
    seen: list[Point] = []
    out = []
    for p in points:
        if p is not None:
            seen.append(p)
        out.append(hypervolume(seen, reference, directions) if seen else 0.0)
    return out


def crowding_distances(points: Sequence[Point], directions: Sequence[str]) -> list[float]:
    """NSGA-II crowding distance of each point within ``points`` (boundary points: inf)."""
    pts = to_min(points, directions)
    n = len(pts)
    dist = [0.0] * n
    if n <= 2:
        return [float("inf")] * n
    for k in range(len(pts[0])):
        order = sorted(range(n), key=lambda i: pts[i][k])
        lo, hi = pts[order[0]][k], pts[order[-1]][k]
        dist[order[0]] = dist[order[-1]] = float("inf")
        if hi == lo:
            continue
        for a, b, c in zip(order, order[1:], order[2:]):
            dist[b] += (pts[c][k] - pts[a][k]) / (hi - lo)
    return dist


def select_top(points: Sequence[Point], directions: Sequence[str], k: int) -> list[int]:
    """Indices of the ``k`` best points by (front rank, larger crowding distance first)."""
    ranks = nondominated_ranks(points, directions)
    crowd = [0.0] * len(points)
    for r in set(ranks):
        members = [i for i, x in enumerate(ranks) if x == r]
        for i, d in zip(members, crowding_distances([points[i] for i in members], directions)):
            crowd[i] = d
    order = sorted(range(len(points)), key=lambda i: (ranks[i], -crowd[i], i))
    return order[:k]


def knee_point(points: Sequence[Point], directions: Sequence[str]) -> int | None:
    """Index of the knee of the non-dominated ``points`` (None when there are none).

    Each objective is scaled to [0, 1] over the front (0 = its best value there); the knee is
    the front point closest (Euclidean) to the ideal corner, i.e. the best balanced trade-off:
    moving away from it along the front costs more in one objective than it gains in another.
    Ties go to the lower index.
    """
    front = pareto_front(points, directions)
    if not front:
        return None
    pts = to_min([points[i] for i in front], directions)
    lows = [min(col) for col in zip(*pts)]
    spans = [max(col) - lo or 1.0 for col, lo in zip(zip(*pts), lows)]
    dist = [sum(((v - lo) / s) ** 2 for v, lo, s in zip(p, lows, spans)) for p in pts]
    return front[min(range(len(front)), key=lambda k: (dist[k], front[k]))]


def known(values: list[float | None]) -> list[float] | None:
    """``values`` when every one is known, else None."""
    out = present(values)
    return out if len(out) == len(values) else None


def present(values: Iterable[float | None]) -> list[float]:
    """The known ones of ``values``, in order."""
    return [v for v in values if v is not None]
