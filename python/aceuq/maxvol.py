"""MaxVol: the rows of a tall matrix that span it best, and the active-set inverse built from them.

``maxvol(A)`` finds r rows of an (n, r) matrix A whose square submatrix S has (locally) maximal
|det S|: every row of A is then a combination of the selected rows with coefficients
C = A S^-1 bounded by |C| <= 1 + tol. Start: the pivot rows of an LU with partial pivoting, or,
when those are ill conditioned, of a column-pivoted QR of A^T (rank revealing); then greedy
single-row swaps, as in pacemaker (Goreinov et al. 2010): while the
largest |C_ij| exceeds 1 + tol, row i replaces slot j and C is updated by Sherman-Morrison,
C <- C - C[:, j] (C[i, :] - e_j) / C[i, j], at O(n r) per swap; C is recomputed from scratch now
and then and at the end, so rounding drift never decides convergence.

``select_active_set(data)`` builds the active set of one element (or one cluster) from its
projections (n, p) and returns the inverse M, (p, p), with gamma(b) = max_j |(b M)_j|: what
pacemaker's ``.asi`` stores and what the C++ Grader reads. A TSQR pass (row chunks) gives the
rank and the whitened reduced coordinates f = b W (orthonormal columns over the data: MaxVol's
row choice and the grading matrix W (A[rows] W)^-1 do not change under W -> W D, and the LU start
of a well-conditioned matrix needs no QR fallback). MaxVol then runs on a working set, never on
all n rows at once: in memory, the 20 r rows of largest leverage |f|^2 plus, on full-rank data,
pacemaker's start (the LU pivot rows of all n rows, one O(n p^2) pass), so that its greedy swaps
retrace those of pacemaker's MaxVol over all rows and end on the same active set (the swap rule
is deterministic; the paths part only if a row outside the working set would have held the
largest coefficient on the way, and the result is then another valid optimum); streamed in row batches
(``memory_limit`` sets the batch size), a cumulative MaxVol pass (kept rows + next batch ->
MaxVol -> kept rows). Refinement passes grade every row (in chunks) and rerun MaxVol on the kept
rows plus the highest-graded rows, until no row is above 1 + tol (or ``max_refinements``, or a
kept set comes back: at a tol below the rounding of the coefficients the swaps cycle; in memory,
a MaxVol over all rows then finishes the job). Every swap multiplies the volume by more than
1 + tol, so in exact arithmetic this terminates. With one batch the computation is the in-memory one.

Degenerate data, by design. Strained perfect crystals, or many copies of one environment, give
projection matrices whose numerical rank r is below p: the MaxVol submatrix is then singular in
exact arithmetic, and in floating point its inverse is noise (condition numbers up to 1e48, gamma
of ordinary atoms ~1e12). We detect the rank and restrict to the well-conditioned subspace:

* Scale the columns to unit norm (MaxVol does not change under column scaling, the singular values
  do, and B functions differ by orders of magnitude), with norms floored at ``col_rtol`` (1e-6)
  times the largest: functions that vanish on all training rows (by the symmetry of a perfect
  crystal) must not be blown up to unit size. Take the SVD of the scaled data (through the R of
  a QR, so it streams) and keep the r directions with singular value above ``rank_rtol`` (1e-12)
  times the largest. Real training sets have resolved directions down to ~1e-11 (mlearn-Si: 3.8e-9
  and 1.5e-11 at 30 functions), which pacemaker keeps and which carry the grade of many new atoms:
  a cut at 1e-8 changed test gammas by a fifth; the cut stays four orders above rounding level,
  where the directions of degenerate data go on down to 1e-17. MaxVol runs on whitened
  coordinates, so the conditioning of the kept subspace does not reach its row choice.
* The p - r discarded directions are not dropped from gamma: a new atom that has a component
  along a direction the training data never spanned IS extrapolating, and a plain projection
  onto the subspace would hide exactly that. Each discarded direction k gets one column of M,
  scaled by 1 / delta_k, delta_k the largest |component| of any training row along it (floored at
  ``spread_rtol`` (1e-8) times the largest scaled row norm: along a direction the data (next to)
  never spanned, a floor at the rank cut's own level would weight the rounding noise of new
  atoms' projections by up to 1e12, and gamma would move by 1e-5 under 1e-8 Å displacements).

So the grade stays one linear map, max_j |(b M)_j|, readable by pyace and our Grader alike;
every training row still has gamma <= 1 + tol; and novelty along unseen directions counts in
units of the training data's own spread there, instead of 1 / (rounding noise). Where the
training data have (next to) no spread along a direction, as along most of the discarded ones of
strained perfect crystals, delta_k is the floor, and any component along it gives a large gamma
(1e3-1e9 for thermal displacements of such a training set): the model has never seen it.
We did not use a ridge (Tikhonov) inverse: it has no such guarantee for training rows, and its gamma scale is set
by an arbitrary lambda rather than by the data. With full-rank data (r = p) nothing changes: M is
the inverse of the selected rows, as in pacemaker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import numpy as np
import scipy.linalg as sla
from .progress import progress as show_progress

DEFAULT_TOL = 1e-3          # |coefficients| <= 1 + tol; pacemaker's gamma_tolerance 1.001
DEFAULT_MAX_ITERS = 2000    # row swaps per MaxVol run
DEFAULT_RANK_RTOL = 1e-12   # relative singular value below which a direction is not resolved
DEFAULT_SPREAD_RTOL = 1e-8  # floor of the training spread along a discarded direction (x largest row norm)
DEFAULT_COL_RTOL = 1e-6     # column norms are floored at this times the largest
_BYTES_PER_VALUE = 8
_WORK_COPIES = 4            # a batch row is held about 4 times: raw, reduced, coefficients, temporary
_CHUNK_ROWS = 8192          # rows per chunk of the QR and grading passes
_WORK_PER_RANK = 20         # in memory, MaxVol works on the 20 r rows of largest leverage, then refines


class RankDeficientError(ValueError):
    """The rows given do not span r dimensions (the start submatrix is numerically singular)."""

    def __init__(self, msg, rank, pivots):
        super().__init__(msg)
        self.rank = rank
        self.pivots = pivots


@dataclass
class MaxVolResult:
    rows: np.ndarray          # (r,) row indices, slot order
    coefficients: np.ndarray  # (n, r): A = C A[rows]
    swaps: int
    converged: bool           # max |C| <= 1 + tol


def start_rows(A: np.ndarray, rank_rtol: float = 1e-12) -> np.ndarray:
    """r well-conditioned rows of the (n, r) matrix A to start MaxVol from.

    The pivot rows of an LU factorisation with partial pivoting (cheap, O(n r^2)) when they are
    well conditioned; otherwise the pivots of a column-pivoted QR of A^T, which is rank
    revealing. Raises RankDeficientError (with the numerical rank and the pivots) when A spans
    fewer than r dimensions at relative level rank_rtol."""
    n, r = A.shape
    if n >= r:
        perm, _, U = sla.lu(A, p_indices=True, check_finite=False)
        diag = np.abs(np.diag(U))
        if diag.size and diag.min() > 1e-6 * diag.max():
            return np.argsort(perm, kind="stable")[:r]
    R, piv = sla.qr(A.T, mode="r", pivoting=True, check_finite=False)
    diag = np.abs(np.diag(R))
    rank = int(np.sum(diag > rank_rtol * diag[0])) if diag.size and diag[0] > 0 else 0
    if rank < r:
        raise RankDeficientError(f"rows span {rank} of {r} dimensions", rank, piv[:rank])
    return piv[:r].copy()


def maxvol(A, tol: float = DEFAULT_TOL, max_iters: int = DEFAULT_MAX_ITERS, start: Optional[Sequence[int]] = None,
           start_inverse: Optional[np.ndarray] = None, refresh: int = 64) -> MaxVolResult:
    """Rows of the (n, r) matrix A (n >= r) spanning a submatrix of locally maximal volume.

    start: initial rows (default: pivoted QR of A^T); start_inverse: the inverse of A[start]
    when already known (its coefficients are then A @ start_inverse, no factorisation)."""
    A = np.asarray(A, dtype=float)
    if A.ndim != 2:
        raise ValueError("maxvol needs a 2-D matrix")
    n, r = A.shape
    if n < r:
        raise ValueError(f"maxvol needs at least as many rows as columns, got {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError("maxvol: matrix holds NaN or inf")
    if r == 0:
        return MaxVolResult(np.zeros(0, dtype=int), np.zeros((n, 0)), 0, True)
    rows = start_rows(A) if start is None else np.array(start, dtype=int)
    if rows.shape != (r,) or len(set(rows.tolist())) != r:
        raise ValueError("maxvol: start must hold r distinct row indices")
    limit = swap_limit(tol)

    def coefficients(rows):
        lu = sla.lu_factor(A[rows], check_finite=False)
        if np.min(np.abs(np.diag(lu[0]))) == 0.0:
            raise RankDeficientError("maxvol: singular submatrix", r - 1, rows)
        return np.asfortranarray(sla.lu_solve(lu, A.T, trans=1, check_finite=False).T)

    C = np.asfortranarray(A @ start_inverse) if start_inverse is not None else coefficients(rows)
    swaps, since_refresh = 0, 0
    while True:
        i, j, big = _largest(C)
        if big <= limit or swaps >= max_iters:
            if since_refresh == 0:
                break
            C = coefficients(rows)  # the converged state is judged on exact coefficients
            since_refresh = 0
            continue
        rows[j] = i
        u = C[:, j] / C[i, j]
        v = C[i, :].copy()
        v[j] -= 1.0
        C = sla.blas.dger(-1.0, u, v, a=C, overwrite_a=True)
        swaps += 1
        since_refresh += 1
        if since_refresh >= refresh:
            C = coefficients(rows)
            since_refresh = 0
    return MaxVolResult(rows, C, swaps, bool(_largest(C)[2] <= limit))


def _largest(C):
    """(i, j, |C_ij|) of the largest |C_ij|, without allocating |C| (argmax/argmin over a
    C-contiguous view: C is Fortran-ordered, so C.T is contiguous and nothing is copied)."""
    n = C.shape[0]
    CT = np.asfortranarray(C).T
    hi, lo = int(CT.argmax()), int(CT.argmin())
    vhi, vlo = float(CT.flat[hi]), -float(CT.flat[lo])
    k, big = (hi, vhi) if vhi >= vlo else (lo, vlo)
    j, i = divmod(k, n)
    return i, j, big


# ----------------------------------------------------------------- active set of one element

@dataclass
class ActiveSetMatrix:
    """The active set of one element (or cluster) and its grading matrix."""

    rows: np.ndarray        # (rank,) indices of the selected rows in the data
    inverse: np.ndarray     # (p, p): gamma(b) = max_j |(b @ inverse)_j|
    rank: int               # numerical rank of the data (= p unless degenerate)
    n_projections: int
    condition: float        # condition number of the selected rows in the rank-r space used
    raw_condition: float    # condition number of the p x p matrix of raw selected rows (inf if fewer rows)
    max_gamma: float        # largest gamma of any data row (<= 1 + tol when converged)
    swaps: int
    batches: int
    refinements: int
    notes: List[str] = field(default_factory=list)


def _as_blocks(data) -> List[np.ndarray]:
    if isinstance(data, (list, tuple)):
        blocks = [np.asarray(b) for b in data]
    else:
        blocks = [data]
    blocks = [b for b in blocks if b.ndim == 2]
    if not blocks:
        raise ValueError("no projection rows given")
    widths = {b.shape[1] for b in blocks}
    if len(widths) != 1:
        raise ValueError(f"projection blocks differ in width: {sorted(widths)}")
    return blocks


class _Rows:
    """Row access over a list of 2-D blocks (numpy arrays or memmaps) as one (n, p) matrix."""

    def __init__(self, blocks):
        self.blocks = blocks
        self.offsets = np.concatenate([[0], np.cumsum([len(b) for b in blocks])])
        self.n = int(self.offsets[-1])
        self.p = blocks[0].shape[1]

    def batches(self, batch_rows):
        """(start index, float64 array) of consecutive row ranges, at most batch_rows each."""
        for off, b in zip(self.offsets[:-1], self.blocks):
            for s in range(0, len(b), batch_rows):
                yield int(off + s), np.asarray(b[s: s + batch_rows], dtype=float)

    def take(self, idx):
        idx = np.asarray(idx, dtype=int)
        out = np.empty((len(idx), self.p))
        blk = np.searchsorted(self.offsets, idx, side="right") - 1
        for k in np.unique(blk):
            sel = blk == k
            out[sel] = self.blocks[k][idx[sel] - self.offsets[k]]
        return out


def swap_limit(tol: float) -> float:
    """The largest |coefficient| MaxVol accepts, 1 + tol: a swap multiplies |det| by |C_ij|, and
    below 1 + 1e-12 that is rounding (swapping would cycle), so tol = 0 means 1e-12."""
    return 1.0 + max(tol, 1e-12)


def check_maxvol_args(tol, max_iters, least_iters: int = 0) -> None:
    """ValueError naming the argument unless tol is a finite number >= 0 and max_iters an integer
    >= least_iters (the Python API takes what the CLI's options check)."""
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.integer, np.floating)) or not (
            np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, (int, np.integer)) or max_iters < least_iters:
        raise ValueError(f"max_iters must be an integer >= {least_iters}, got {max_iters!r}")


def batch_rows_for(memory_limit: Optional[int], p: int) -> Optional[int]:
    """Rows that MaxVol may hold at once under memory_limit bytes (None: no limit)."""
    if memory_limit is None:
        return None
    rows = int(memory_limit) // (_BYTES_PER_VALUE * _WORK_COPIES * max(p, 1))
    if rows < 2 * p:
        need = 2 * p * _BYTES_PER_VALUE * _WORK_COPIES * p
        raise ValueError(f"memory limit {int(memory_limit)} bytes is too small for {p} projections: "
                         f"MaxVol needs at least {need} bytes")
    return rows


def select_active_set(data, tol: float = DEFAULT_TOL, max_iters: int = DEFAULT_MAX_ITERS,
                      rank_rtol: float = DEFAULT_RANK_RTOL, col_rtol: float = DEFAULT_COL_RTOL,
                      spread_rtol: float = DEFAULT_SPREAD_RTOL, pacemaker_start: bool = True,
                      memory_limit: Optional[int] = None,
                      batch_rows: Optional[int] = None, max_refinements: int = 30,
                      progress: bool = False, desc: str = "maxvol") -> ActiveSetMatrix:
    """Active set and grading matrix of projection rows (an (n, p) array, memmap, or list of blocks).

    memory_limit (bytes) or batch_rows set the streaming batch size; without either, or when all
    rows fit, everything happens in memory in one MaxVol run. pacemaker_start: on full-rank data
    in memory, also start from pacemaker's start (the LU pivot rows of all rows), to end on its
    active set (module docstring)."""
    rows_src = _Rows(_as_blocks(data))
    n, p = rows_src.n, rows_src.p
    if n < 1:
        raise ValueError("no projection rows given")
    if batch_rows is None:
        batch_rows = batch_rows_for(memory_limit, p)
    if batch_rows is None or batch_rows >= n:
        batch_rows = n
    batch_rows = max(int(batch_rows), 2 * p)
    notes: List[str] = []
    chunk = min(batch_rows, _CHUNK_ROWS)
    n_batches = sum(-(-len(b) // batch_rows) for b in rows_src.blocks if len(b))

    # pass 0: R of a QR (TSQR over row chunks), then the rank-revealing SVD of the column-scaled R
    R = None
    for _, blk in show_progress(rows_src.batches(chunk), progress, desc + " (rank)"):
        if not np.all(np.isfinite(blk)):
            raise ValueError("projections hold NaN or inf")
        R = np.linalg.qr(blk if R is None else np.vstack([R, blk]), mode="r")
    norms = np.linalg.norm(R, axis=0)
    if norms.max() == 0:
        raise ValueError("all projections are zero")
    # columns (B functions) that (nearly) vanish on all rows, e.g. by the symmetry of perfect
    # crystals, keep a floor: scaling them up to unit norm would turn any new atom's small
    # value there into an arbitrarily large grade
    norms = np.maximum(norms, col_rtol * norms.max())
    _, s, vt = np.linalg.svd(R / norms, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        raise ValueError("all projections are zero")
    rank = int(np.sum(s > rank_rtol * s[0]))
    if n < p:
        notes.append(f"{n} rows for {p} projections: under-determined, rank {rank}")
    if rank < p:
        notes.append(f"numerical rank {rank} of {p} (singular values below {rank_rtol:g} x the largest); "
                     f"MaxVol in the {rank}-dim subspace, {p - rank} directions graded by the training spread")
    W0 = vt[:rank].T / norms[:, None]            # (p, r): reduced coordinates b @ W0
    # MaxVol runs on whitened coordinates f = b @ W (orthonormal columns over the data): its row
    # choice and the grading matrix W (A[rows] W)^-1 do not change under W -> W D, and the start
    # LU of a well-conditioned matrix is a good start
    W = W0 / s[:rank]
    W_perp = vt[rank:].T / norms[:, None]        # (p, p - r)
    n_vt = vt.shape[0]
    if n_vt < p:  # fewer rows than columns: complete the basis with the null space
        null = sla.null_space(vt) if n_vt else np.eye(p)
        W_perp = np.hstack([W_perp, null / norms[:, None]])

    # spread along the discarded directions, row norms, and leverage scores |b W|^2 (in chunks)
    delta = np.zeros(W_perp.shape[1])
    max_row_norm = 0.0
    leverage = np.empty(n)
    for start, blk in rows_src.batches(chunk):
        if W_perp.shape[1]:
            delta = np.maximum(delta, np.abs(blk @ W_perp).max(axis=0))
        max_row_norm = max(max_row_norm, float(np.linalg.norm(blk / norms, axis=1).max()))
        f = blk @ W
        leverage[start: start + len(blk)] = np.einsum("ij,ij->i", f, f)

    # pass 1: MaxVol on a working set: in memory, the rows of largest leverage; streaming, a
    # cumulative MaxVol over batches (kept rows + next batch -> MaxVol -> kept rows)
    in_memory = n_batches == 1
    work = min(n, max(_WORK_PER_RANK * rank, 2 * p))
    swaps = 0
    kept = np.zeros(0, dtype=int)
    if in_memory:
        idx = np.sort(np.argpartition(-leverage, work - 1)[:work]) if work < n else np.arange(n)
        # full rank: pacemaker's start, the pivot rows of a partially pivoted LU of all rows, so
        # that the greedy swaps below retrace pacemaker's MaxVol (see the module docstring)
        first = _lu_pivot_rows(rows_src, norms, chunk) if rank == p and pacemaker_start else None
        if first is not None:
            idx = np.union1d(idx, first)
        kept, result, sw = _maxvol_or_span(rows_src.take(idx) @ W, idx, tol, max_iters,
                                           None if first is None else np.searchsorted(idx, first))
        swaps += sw
        if len(kept) < rank and work < n:  # the leverage rows do not span: all rows
            idx = np.arange(n)
            kept, result, sw = _maxvol_or_span(rows_src.take(idx) @ W, idx, tol, max_iters)
            swaps += sw
        room = max(work - len(kept), rank)
    else:
        for start, blk in show_progress(rows_src.batches(batch_rows), progress, desc):
            idx = np.concatenate([kept, np.arange(start, start + len(blk))])
            X = np.vstack([rows_src.take(kept) @ W, blk @ W]) if len(kept) else blk @ W
            kept, result, sw = _maxvol_or_span(X, idx, tol, max_iters)
            swaps += sw
        room = max(batch_rows - len(kept), 1)
    if len(kept) < rank:
        raise ValueError(f"rows span only {len(kept)} of {rank} dimensions")

    # refinement: grade every row against the kept ones; MaxVol again on the kept rows plus the
    # highest-graded rows, until no row is above 1 + tol
    refinements = 0
    S_inv = np.linalg.inv(rows_src.take(kept) @ W)
    best = (np.inf, kept, S_inv)
    seen = set()  # the kept sets graded so far: one seen again is a cycle (swaps at rounding level)
    for it in range(max_refinements + 1):
        # grade every row; keep the `room` highest-gamma rows (not only those above 1 + tol:
        # rows near the boundary are what the next MaxVol needs to avoid cycling)
        worst, top_idx, top_gamma = _grade_top(rows_src, chunk, W @ S_inv, room)
        if worst < best[0]:
            best = (worst, kept, S_inv)
        key = tuple(np.sort(kept).tolist())
        if worst <= swap_limit(tol) or it == max_refinements or key in seen:
            break
        seen.add(key)
        over_idx = np.setdiff1d(top_idx[top_gamma > 0], kept)
        idx = np.concatenate([kept, np.sort(over_idx)])
        res = maxvol(rows_src.take(idx) @ W, tol=tol, max_iters=max_iters, start=np.arange(len(kept)),
                     start_inverse=S_inv)
        swaps += res.swaps
        kept = idx[res.rows]
        S_inv = np.linalg.inv(rows_src.take(kept) @ W)
        refinements += 1
    max_gamma, kept, S_inv = best
    if max_gamma > swap_limit(tol) and in_memory:
        # the working set did not settle: MaxVol on all rows from the best rows so far
        res = maxvol(rows_src.take(np.arange(n)) @ W, tol=tol, max_iters=max_iters, start=kept.copy(),
                     start_inverse=S_inv)
        swaps += res.swaps
        kept = res.rows
        S_inv = np.linalg.inv(rows_src.take(kept) @ W)
        max_gamma = _grade_top(rows_src, chunk, W @ S_inv, 1)[0]
    floor = spread_rtol * max_row_norm
    delta = np.maximum(delta, floor if floor > 0 else 1.0)
    inverse = np.hstack([W @ S_inv, W_perp / delta]) if W_perp.shape[1] else W @ S_inv
    selected = rows_src.take(kept)
    condition = float(np.linalg.cond(selected @ W0))
    if max_gamma > swap_limit(tol):
        # (max_gamma - 1 shown: at a tol below the rounding of ill-conditioned rows' coefficients,
        # about condition x 1e-16, the swaps cycle at 1 + that, which '1' alone would hide)
        notes.append(f"MaxVol stopped at max gamma {max_gamma:.4g} (1 + {max_gamma - 1:.2g}) after {refinements} "
                     f"refinements and {swaps} swaps"
                     + (f": tol {tol:g} is below the rounding of these rows' coefficients (condition number "
                        f"{condition:.2g})" if max_gamma - 1 < 1e-16 * condition * 100 else ""))
    raw_condition = float(np.linalg.cond(selected)) if len(kept) == p else float("inf")
    return ActiveSetMatrix(rows=kept, inverse=np.ascontiguousarray(inverse), rank=rank, n_projections=p,
                           condition=condition, raw_condition=raw_condition, max_gamma=float(max_gamma),
                           swaps=swaps, batches=n_batches, refinements=refinements, notes=notes)


def _grade_top(rows_src, chunk, G, room):
    """Largest gamma of all rows under the grading matrix G, and the `room` highest-graded rows."""
    worst, top_idx, top_gamma = 0.0, np.zeros(0, dtype=int), np.zeros(0)
    for start, blk in rows_src.batches(chunk):
        c = blk @ G
        g = np.maximum(c.max(axis=1), -c.min(axis=1))
        worst = max(worst, float(g.max()))
        top_idx = np.concatenate([top_idx, start + np.arange(len(blk))])
        top_gamma = np.concatenate([top_gamma, g])
        if len(top_idx) > room:
            part = np.argpartition(-top_gamma, room - 1)[:room]
            top_idx, top_gamma = top_idx[part], top_gamma[part]
    return worst, top_idx, top_gamma


def _lu_pivot_rows(rows_src, norms, chunk):
    """The first p pivot rows of an LU factorisation with partial pivoting of all n rows (column
    scaling by norms does not change them), or None when a pivot is (near) zero: partial pivoting
    is not rank revealing, and start_rows then does better."""
    n, p = rows_src.n, rows_src.p
    X = np.empty((n, p), order="F")
    for start, blk in rows_src.batches(chunk):
        X[start: start + len(blk)] = blk / norms
    lu, piv, info = sla.lapack.dgetrf(X, overwrite_a=True)
    diag = np.abs(np.diag(lu[:p]))
    del X, lu
    if info != 0 or diag.min() <= 1e-12 * diag.max():
        return None
    order = np.arange(n)
    for i, j in enumerate(piv[:p]):  # LAPACK's row interchanges, applied in turn
        order[i], order[j] = order[j], order[i]
    return order[:p].copy()


def _maxvol_or_span(X, idx, tol, max_iters, first=None):
    """MaxVol of X (from the rows `first`, default start_rows) when its rows span all columns;
    otherwise the spanning rows found so far."""
    if first is None:
        try:
            first = start_rows(X)
        except RankDeficientError as err:
            return idx[np.sort(err.pivots)], None, 0
    res = maxvol(X, tol=tol, max_iters=max_iters, start=first)
    return idx[res.rows], res, res.swaps


def gamma_of(projections: np.ndarray, inverse: np.ndarray, chunk: int = 8192,
             rows: Optional[np.ndarray] = None) -> np.ndarray:
    """max_j |(b M)_j| per row, a chunk of rows at a time: for selection's working sets, tests and
    scratch checks (aceuq grades structures with the C++ Grader). rows: indices of the rows to
    grade (default: all), gathered a chunk at a time."""
    projections = np.asarray(projections)
    n = len(projections) if rows is None else len(rows)
    out = np.empty(n)
    for a in range(0, n, chunk):
        block = projections[a: a + chunk] if rows is None else projections[rows[a: a + chunk]]
        out[a: a + chunk] = np.abs(block @ inverse).max(axis=1)
    return out


def parse_memory(text: Union[str, int, None]) -> Optional[int]:
    """'2GB', '500MB', '64kB', or a byte count -> bytes; None/'auto'/'none' -> None."""
    if text is None:
        return None
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        if text <= 0:
            raise ValueError(f"memory limit must be a positive size in bytes, got {text}")
        return int(text)
    t = str(text).strip().upper().replace(" ", "")
    if t in ("", "AUTO", "NONE"):
        return None
    for suffix, mult in (("GB", 2 ** 30), ("MB", 2 ** 20), ("KB", 2 ** 10), ("G", 2 ** 30), ("M", 2 ** 20),
                         ("K", 2 ** 10), ("B", 1)):
        if t.endswith(suffix):
            num = t[: -len(suffix)]
            break
    else:
        num, mult = t, 1
    try:
        value = float(num) * mult
    except ValueError:
        raise ValueError(f"cannot read memory limit '{text}' (examples: 2GB, 500MB)") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"memory limit must be a positive, finite size, got '{text}'")
    return int(value)
