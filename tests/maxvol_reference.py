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
