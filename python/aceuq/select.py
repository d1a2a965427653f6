"""D-optimal selection of the most informative structures (what ``pace_select`` does, greedily).

Candidates' projections are stacked under the current active set's rows, per element and, for a
clustered active set, per cluster (candidates go to the cluster the Grader assigns them); MaxVol
then swaps in the candidate rows that enlarge the volume. The structure owning most of the rows
swapped in (ties: the larger max gamma) is selected, the active set is updated with its atoms, and
the search repeats on the remaining candidates, until N structures are selected or no candidate
row enters any active set (every candidate atom interpolates). Updating after each pick avoids
selecting near-duplicates that each look informative against the old active set alone.

With one_shot, pace_select's rule applies instead: the counts of the first round only, the N
candidates with most rows taken (near-duplicates can then be chosen together).

Rows that a pick brings (or the active set held) but MaxVol leaves out stay in the pool, stacked
between the active set and the candidates: they are data already taken, so a later candidate row
enters only if it beats them too. Without them, once later picks had swapped out a chosen
structure's rows, an exact copy of that structure would look new again.

Each MaxVol swaps on a working set, as maxvol.select_active_set does: the highest-graded
candidate rows, then every row graded again against the result, the highest of any still above
1 + tol joining, until none is. The result meets MaxVol's criterion over the whole pool, while
each swap updates the coefficients of a few thousand rows instead of all candidate atoms (a pick
among 2000 candidates of 125k atoms: half the time); the path, and so the picks, can differ from
swaps over all rows, as between any two MaxVol optima.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms

from .activeset import ActiveSet
from .maxvol import (DEFAULT_MAX_ITERS, DEFAULT_SPREAD_RTOL, DEFAULT_TOL, check_maxvol_args, gamma_of, maxvol,
                     swap_limit)
from .potential import Potential, as_frames, atom_masks
from .progress import progress as show_progress


# MaxVol's swaps run on at most this many candidate rows per column of the active set at a time
_WORKING_ROWS_PER_COLUMN = 4


@dataclass
class Selection:
    indices: List[int]                       # selected candidates, in the order chosen
    new_rows: List[int]                      # rows each brought into the active sets
    max_gamma: np.ndarray                    # (n_candidates,) max gamma of each candidate vs the initial set
    notes: List[str] = field(default_factory=list)
    counted: bool = False                    # max_gamma is over the counted atoms only (not whole structures)


@dataclass
class _Group:
    matrix: np.ndarray    # current active-set rows (p, p)
    inverse: np.ndarray   # its inverse (grading matrix)
    rows: np.ndarray      # candidate rows of this group
    owner: np.ndarray     # candidate structure of each row
    kept: np.ndarray      # rows taken (active set, picks) that MaxVol left out of the active set


def select_structures(potential: Potential, candidates: Sequence[Atoms], active_set: ActiveSet, n: int,
                      tol: float = DEFAULT_TOL, max_iters: int = DEFAULT_MAX_ITERS,
                      progress: bool = False, counted: Optional[Sequence[np.ndarray]] = None,
                      one_shot: bool = False) -> Selection:
    """Up to n candidate structures, greedily, each the one whose atoms enlarge the active set most
    (module docstring); stops early when every remaining candidate atom interpolates (a note says
    so). The active set on disk is not changed: the updates live only during the search.
    one_shot: pace_select's rule instead: one MaxVol over all candidates, then the n structures
    owning most of the rows it swaps in (ties: the larger max gamma). One MaxVol in all instead of
    one per pick, but near-duplicates can be chosen together.
    tol, max_iters: MaxVol's (a swap must grow the volume by more than 1 + tol).
    counted: per candidate, a boolean mask of the atoms whose environments count (default: all);
    e.g. the atoms of a cut-out far enough inside it to see all their neighbours, not its
    surface, whose environments exist in no simulation."""
    candidates = as_frames(candidates, "select_structures")
    if n < 1:
        raise ValueError("n must be at least 1")
    check_maxvol_args(tol, max_iters, least_iters=1)  # no swap allowed: nothing could be selected
    if not candidates:
        raise ValueError("candidates: no structures to select from")
    active_set.check_potential(potential)
    if counted is not None:
        counted = atom_masks(counted, candidates, "counted", "candidate")
    proj = potential.projections(candidates, mode=active_set.mode, progress=progress, atoms=counted)
    matrices = active_set.active_matrices()
    data_inv = _stored(active_set)
    max_gamma = np.zeros(len(candidates))
    groups: Dict[Tuple[str, int], _Group] = {}
    for el, p in proj.items():
        if len(p.values) == 0:
            continue
        g, c = active_set.grade(el, p.values)
        np.maximum.at(max_gamma, p.structure, g)
        for cl in np.unique(c):
            sel = c == cl
            if sel.all():  # one cluster (a global set): the rows themselves, not a copy of them all
                sel = slice(None)
            m, inv = _whole(matrices[el][cl], data_inv[el][cl])
            groups[(el, int(cl))] = _Group(m, inv, p.values[sel], p.structure[sel], np.empty((0, m.shape[1])))

    if one_shot:
        counts = _entering_counts(groups, np.zeros(len(candidates), dtype=bool), tol, max_iters)
        order = np.lexsort((-max_gamma, -counts))  # most rows first; ties: the larger max gamma
        chosen = [int(s) for s in order[:n] if counts[s] > 0]
        brought = [int(counts[s]) for s in chosen]
    else:
        chosen, brought = _greedy(groups, max_gamma, n, tol, max_iters, progress)
    notes = []
    if len(chosen) == len(candidates) < n:
        notes.append(f"every candidate ({len(candidates)}) is selected: fewer than the {n} requested")
    elif len(chosen) < n:
        notes.append(f"only {len(chosen)} of {n} requested structures own rows of the one MaxVol; the other "
                     f"candidates add none beside them ({int((max_gamma > 1 + tol).sum())} candidates in all "
                     f"have atoms with gamma above 1 + tol)" if one_shot else
                     f"only {len(chosen)} of {n} requested structures add rows to the active set; "
                     f"the other candidates interpolate")
    return Selection(chosen, brought, max_gamma, notes, counted=counted is not None)


def selected_frames(candidates: Sequence[Atoms], selection: Selection) -> List[Atoms]:
    """The selected candidates in the order chosen, as copies (with any stored energies and forces)
    labelled ``candidate_index``, ``max_gamma`` (vs the initial active set; ``counted_max_gamma``,
    of the counted atoms only, where the selection counted some: a cut-out keeps its own
    ``max_gamma``, the simulation's), ``active_rows_added``."""
    from ase.calculators.calculator import all_properties
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for i, rows in zip(selection.indices, selection.new_rows):
        a = candidates[i].copy()
        calc = candidates[i].calc
        # its results if they are this structure's (one calculator shared by all holds the last
        # one's), of the properties ASE stores (not an aceuq calculator's gamma or forces_std)
        results = calc.results if calc is not None and not calc.check_state(candidates[i]) else {}
        kept = {k: v for k, v in results.items() if k in all_properties}
        if kept:
            a.calc = SinglePointCalculator(a, **kept)
        a.info["candidate_index"] = int(i)
        a.info.pop("counted_max_gamma", None)  # an earlier selection's, of another active set
        a.info["counted_max_gamma" if selection.counted else "max_gamma"] = float(selection.max_gamma[i])
        a.info["active_rows_added"] = int(rows)
        out.append(a)
    return out


def _highest(g: np.ndarray, floor: float, room: int) -> np.ndarray:
    """Sorted indices of the (at most ``room``) highest grades above ``floor``."""
    above = np.flatnonzero(g > floor)
    if len(above) > room:
        above = above[np.argpartition(g[above], len(above) - room)[len(above) - room:]]
    return np.sort(above)


def _maxvol_over_pool(grp: _Group, rows: np.ndarray, tol, max_iters):
    """MaxVol from the group's active set over the pool [active set; kept rows; grp.rows[rows]]
    (rows: indices; the candidate rows are gathered a chunk at a time, not copied). The swaps
    run on the taken rows and the highest-graded candidate rows against the active set (those
    above 1 + tol, at most _WORKING_ROWS_PER_COLUMN per column); every candidate row is then
    graded against the result, the highest of those still above 1 + tol join, and the swaps go
    on (maxvol.select_active_set's working set), so the result meets MaxVol's criterion over the
    whole pool without swapping through (and updating the coefficients of) every row. Returns the
    chosen rows (slot order) as (matrix, position in rows or -1 for a taken row), and the taken
    rows left out."""
    base = np.vstack([grp.matrix, grp.kept])
    first = len(base)
    chosen, work = _working_set_maxvol(grp, base, rows, tol, max_iters)
    which = np.full(len(chosen), -1)
    cand = chosen >= first
    which[cand] = work[chosen[cand] - first]
    matrix = np.vstack([base[c] if c < first else grp.rows[rows[w]] for c, w in zip(chosen, which)])
    left_out = np.ones(first, dtype=bool)
    left_out[chosen[chosen < first]] = False
    return matrix, which, base[left_out]


def _working_set_maxvol(grp: _Group, base: np.ndarray, rows: np.ndarray, tol, max_iters):
    """_maxvol_over_pool's rounds: (chosen rows of [base; rows[work]], work)."""
    p, first = len(grp.matrix), len(base)
    room = _WORKING_ROWS_PER_COLUMN * p
    work = _highest(gamma_of(grp.rows, grp.inverse, rows=rows), swap_limit(tol), room)
    chosen, inverse = np.arange(p), grp.inverse
    while len(work):
        X = np.vstack([base, grp.rows[rows[work]]])
        chosen = maxvol(X, tol=tol, max_iters=max_iters, start=chosen, start_inverse=inverse).rows
        inverse = np.linalg.inv(X[chosen])
        g = gamma_of(grp.rows, inverse, rows=rows)
        g[work] = 0.0
        if g.max(initial=0.0) <= swap_limit(tol):
            break
        # the highest rows join, not only those above 1 + tol: rows near the boundary are what the
        # next MaxVol needs to settle without many more rounds
        more = _highest(g, 0.0, room)
        grown = np.union1d(work, more)  # candidate rows chosen so far keep their place in X
        cand = chosen >= first
        chosen = chosen.copy()
        chosen[cand] = first + np.searchsorted(grown, work[chosen[cand] - first])
        work = grown
    return chosen, work


def _greedy(groups: Dict[Tuple[str, int], _Group], max_gamma: np.ndarray, n: int, tol, max_iters, progress):
    """The greedy rule (module docstring): (picks, rows each brought)."""
    chosen: List[int] = []
    brought: List[int] = []
    taken = np.zeros(len(max_gamma), dtype=bool)
    for _ in show_progress(range(n), progress, "select"):
        counts = _entering_counts(groups, taken, tol, max_iters)
        if counts.max() == 0:
            break
        best = np.flatnonzero(counts == counts.max())
        s = int(best[np.argmax(max_gamma[best])])
        chosen.append(s)
        brought.append(int(counts[s]))
        taken[s] = True
        for grp in groups.values():
            mine = np.flatnonzero(grp.owner == s)
            if len(mine):
                _absorb(grp, mine, tol, max_iters)
    return chosen, brought


def _entering_counts(groups: Dict[Tuple[str, int], _Group], taken: np.ndarray, tol, max_iters) -> np.ndarray:
    """Per candidate, its rows that MaxVol swaps into the active sets, over all groups, from the
    candidates not taken yet."""
    counts = np.zeros(len(taken), dtype=int)
    for grp in groups.values():
        live = np.flatnonzero(~taken[grp.owner])
        if len(live):
            np.add.at(counts, grp.owner[_entering(grp, live, tol, max_iters)], 1)
    return counts


def _entering(grp: _Group, rows: np.ndarray, tol, max_iters) -> np.ndarray:
    """The candidate rows (indices into grp.rows, from ``rows``) MaxVol swaps into the group's
    active set."""
    _, which, _ = _maxvol_over_pool(grp, rows, tol, max_iters)
    return np.sort(rows[which[which >= 0]])


def _absorb(grp: _Group, rows: np.ndarray, tol, max_iters) -> None:
    """Take grp.rows[rows] (a picked structure's): the active set becomes MaxVol's choice over the
    pool, and what it leaves out is kept."""
    matrix, which, base_left_out = _maxvol_over_pool(grp, rows, tol, max_iters)
    rows_left_out = np.ones(len(rows), dtype=bool)
    rows_left_out[which[which >= 0]] = False
    grp.matrix = matrix
    grp.kept = np.vstack([base_left_out, grp.rows[rows[rows_left_out]]])
    grp.inverse = np.linalg.inv(grp.matrix)


def _whole(matrix: np.ndarray, inverse: np.ndarray):
    """(matrix, inverse) of an active set, made nonsingular where the stored inverse is singular:
    pacemaker's, built on data that never activate some functions, has singular values ~1e-19 to
    1e-30 of its largest along them (aceuq's own are invertible). Each such direction gets a
    spread of DEFAULT_SPREAD_RTOL times the largest singular value of the matrix, as
    select_active_set weights the directions its data do not span: candidate rows with a
    component along one grade high and enter, and no MaxVol swap meets a singular submatrix;
    along the others the inverse is the stored one."""
    U, s, Vt = np.linalg.svd(inverse)
    missing = s <= np.finfo(float).eps * s[0]  # below the rounding of the largest: not represented
    if not missing.any():
        return matrix, inverse
    rows = np.where(missing, 0.0, 1.0 / np.where(missing, 1.0, s))  # the matrix's singular values
    rows[missing] = DEFAULT_SPREAD_RTOL * rows.max()
    return (Vt.T * rows) @ U.T, (U / rows) @ Vt


def _stored(active_set: ActiveSet):
    from .activeset import _stored_inverses, load_npz

    data = load_npz(active_set.path)
    return {el: _stored_inverses(data, el) for el in active_set.potential.elements}
