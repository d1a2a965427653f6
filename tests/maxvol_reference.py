"""MaxVol from scratch in numpy, the reference the selection tests recompute aceuq's rules with."""
import numpy as np


def greedy_maxvol(X, p, tol):
    """Pacemaker's greedy MaxVol from scratch (numpy only): start at the first p rows of X; while
    the largest |C_ij| of C = X X[rows]^-1 exceeds 1 + tol, row i replaces slot j (|det| grows by
    |C_ij|). Returns the final rows (indices into X)."""
    rows = list(range(p))
    for _ in range(5000):
        C = X @ np.linalg.inv(X[rows])
        i, j = np.unravel_index(np.argmax(np.abs(C)), C.shape)
        if abs(C[i, j]) <= 1 + tol:
            return rows
        rows[j] = int(i)
    raise AssertionError("greedy MaxVol did not converge")


def entering_counts(A, kept, rows, owner, cluster_of, taken, tol):
    """Per candidate, its rows that greedy_maxvol swaps in, per cluster from the cluster's active
    set A[cl] over [A[cl]; kept[cl]; rows of the cluster's candidates not taken]; and the number
    entering each cluster."""
    p, n_cand = len(A[0]), len(taken)
    counts, per_cluster = np.zeros(n_cand, dtype=int), np.zeros(len(A), dtype=int)
    for cl in range(len(A)):
        live = ~taken[owner] & (cluster_of == cl)
        if not live.any():
            continue
        X = np.vstack([A[cl], kept[cl], rows[live]])
        first = p + len(kept[cl])
        entered = np.array([r - first for r in greedy_maxvol(X, p, tol) if r >= first], dtype=int)
        counts += np.bincount(owner[live][entered], minlength=n_cand)
        per_cluster[cl] = len(entered)
    return counts, per_cluster


def reference_one_shot(actives, rows, owner, cluster_of, max_gamma, n, tol):
    """pace_select's rule (select_structures(one_shot=True)): one MaxVol per cluster over all
    candidate rows, then the n candidates with most rows swapped in (ties: the larger max_gamma,
    then the lower index), those with none left out. Returns (picks, their rows)."""
    A = [np.array(a, dtype=float) for a in actives]
    counts, _ = entering_counts(A, [np.empty((0, len(A[0]))) for _ in A], rows, owner, cluster_of,
                                np.zeros(len(max_gamma), dtype=bool), tol)
    order = sorted(range(len(counts)), key=lambda s: (-counts[s], -max_gamma[s], s))
    picks = [s for s in order[:n] if counts[s] > 0]
    return picks, [int(counts[s]) for s in picks]


def reference_select(actives, rows, owner, cluster_of, max_gamma, n, tol):
    """aceuq.select's rule, recomputed with greedy_maxvol over all rows: each round, per cluster,
    MaxVol from the cluster's active set over [active set; rows taken before but left out; rows
    of the candidates not taken yet]; the candidate owning most rows swapped in, over all
    clusters, is picked (ties: the larger max_gamma); each cluster's active set is then updated
    with the pick's rows (MaxVol over [active set; left out; them]) and what it leaves out is
    kept; stop after n picks or when no row enters. actives: the active-set matrix of each
    cluster; cluster_of: each row's cluster. Returns (picks, rows each brought, rows entering each
    cluster over all rounds, the active sets after)."""
    A = [np.array(a, dtype=float) for a in actives]
    p, n_cand = len(A[0]), len(max_gamma)
    kept = [np.empty((0, p)) for _ in A]
    taken = np.zeros(n_cand, dtype=bool)
    chosen, brought, entered_total = [], [], np.zeros(len(A), dtype=int)
    for _ in range(n):
        counts, per_cluster = entering_counts(A, kept, rows, owner, cluster_of, taken, tol)
        if counts.max() == 0:
            break
        best = np.flatnonzero(counts == counts.max())
        s = int(best[np.argmax(max_gamma[best])])
        chosen.append(s)
        brought.append(int(counts[s]))
        entered_total += per_cluster
        taken[s] = True
        for cl in range(len(A)):
            mine = (owner == s) & (cluster_of == cl)
            if mine.any():
                X = np.vstack([A[cl], kept[cl], rows[mine]])
                active = greedy_maxvol(X, p, tol)
                A[cl] = X[active]
                kept[cl] = np.delete(X, active, axis=0)
    return chosen, brought, entered_total, A
