// Per-atom evaluation of an ACE potential: energy, forces, and the projections b_i used for
// active sets and linear models. One implementation serves Python, LAMMPS and the tests.
#pragma once
#include <complex>
#include <memory>
#include <vector>

#include "aceuq/potential.hpp"

namespace aceuq {

enum class ProjectionMode { None, Linear, Full };

// Result for one central atom.
struct AtomResult {
    double energy = 0;
    // dE_i/d(r_j - r_i) for each neighbour passed in (zero for those beyond the cutoff)
    std::vector<double> dE_drij;            // 3 per neighbour
    std::vector<double> projections;        // Linear: n_functions; Full: n_functions * ndensity
};

// Works on one central atom and its neighbours: the layer LAMMPS and the structure code share.
// Not thread-safe (holds scratch space): use one Evaluator per thread.
class AtomEvaluator {
public:
    explicit AtomEvaluator(std::shared_ptr<const Potential> potential);
    const Potential& potential() const { return *pot_; }

    // mu_i: element index of the central atom; for each of nneigh neighbours its element index
    // (negative: ignored) and displacement r_j - r_i.
    void compute(int mu_i, int nneigh, const int* mu_j, const double* rij, bool need_forces,
                 ProjectionMode mode, AtomResult& out);

private:
    std::shared_ptr<const Potential> pot_;
    struct Scratch;
    std::shared_ptr<Scratch> s_;
};

// Whole structures (ASE-like input), for Python.
struct StructureResult {
    double energy = 0;
    std::vector<double> energies;     // per atom
    std::vector<double> forces;       // n x 3
    std::vector<double> virial;       // 3 x 3: sum over pairs r_ij (x) dE/dr_ij = dE/dstrain = V * stress (ASE sign)
    std::vector<double> projections;  // n x width (rows of atoms of other elements padded with 0)
    int projection_width = 0;
};

// types: element index in the potential per atom (all must be valid).
StructureResult evaluate_structure(AtomEvaluator& ev, int n, const double* positions, const double* cell,
                                   const bool* pbc, const int* types, bool need_forces,
                                   ProjectionMode mode);

}  // namespace aceuq
