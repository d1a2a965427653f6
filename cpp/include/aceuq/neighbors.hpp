// O(N) neighbour search with cell lists, for periodic, mixed and open boundaries.
#pragma once
#include <vector>

namespace aceuq {

// Full neighbour list: for atom i, entries offsets[i] .. offsets[i+1]-1.
// index[k] is the neighbour's atom index in the input (images fold back to it),
// dvec[3k..3k+2] = r_j(image) - r_i = r_j + S.cell - r_i with an integer lattice translation S
// (non-zero only along periodic directions), r being the positions exactly as given (unwrapped),
// so derivatives with respect to dvec chain to the input positions. Every pair within the cutoff appears once per direction
// and once per periodic image (also an atom with its own images in a small cell).
struct NeighborList {
    std::vector<long> offsets;
    std::vector<int> index;
    std::vector<double> dvec;
    std::vector<double> dist;
};

// positions: n x 3 row-major (Cartesian, need not be wrapped into the cell);
// cell: 3 x 3 row-major, rows are the lattice vectors (ASE convention); pbc per direction.
// A non-periodic direction may have a zero or arbitrary cell vector.
// Pairs with distance strictly below cutoff are listed; an atom is never its own neighbour at
// zero shift (its periodic images are). Within an atom's block the order is deterministic
// (a function of the input only) but not sorted.
// Throws std::invalid_argument on a non-finite position, a non-positive or non-finite cutoff,
// or a non-finite or singular periodic cell.
NeighborList build_neighbor_list(int n, const double* positions, const double* cell,
                                 const bool* pbc, double cutoff);

}  // namespace aceuq
