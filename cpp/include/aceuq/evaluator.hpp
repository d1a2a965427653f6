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
};

// Works on one central atom and its neighbours: the layer LAMMPS and the structure code share.
// Not thread-safe (holds scratch space): use one Evaluator per thread.
class AtomEvaluator {
public:
    explicit AtomEvaluator(std::shared_ptr<const Potential> potential);
    const Potential& potential() const { return *pot_; }

    // mu_i: element index of the central atom; for each of nneigh neighbours its element index
    // (negative: ignored) and displacement r_j - r_i.
    // mode other than None: the projections b_i (Linear: n_functions values; Full: dE/dc,
    // n_functions * ndensity, density-major) are written to projections_to, which must hold
    // projection_width(mu_i, mode) values (e.g. a row of the caller's batch).
    void compute(int mu_i, int nneigh, const int* mu_j, const double* rij, bool need_forces,
                 ProjectionMode mode, AtomResult& out, double* projections_to = nullptr);

    // Number of projections of a central atom of element mu_i: n_functions for Linear,
    // n_functions * ndensity for Full, 0 for None.
    int projection_width(int mu_i, ProjectionMode mode) const;

    // The same atom for several coefficient sets that share this potential's basis (ensemble
    // members): neighbours, A and B are computed once. member_coeffs[k] points to the
    // n_functions(mu_i) * ndensity coefficients of member k, function-major (as
    // Potential::coefficients). out[k] gets energy and dE_drij.
    void compute_members(int mu_i, int nneigh, const int* mu_j, const double* rij, bool need_forces,
                         const std::vector<const double*>& member_coeffs, std::vector<AtomResult>& out);

private:
    void prepare(int mu_i, int nneigh, const int* mu_j, const double* rij, bool need_forces);
    void finish(int mu_i, const double* r1_coeff, const double* f_coeff, bool need_forces, ProjectionMode mode,
                AtomResult& out, double* projections_to);
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

// The projections of the listed atoms only, without energies or forces (rows in the order of
// `atoms`, each `width` wide, atoms of narrower elements padded with 0): e.g. the atoms of a
// cut-out that see all their neighbours in it, not its surface.
std::vector<double> structure_projections(AtomEvaluator& ev, int n, const double* positions, const double* cell,
                                          const bool* pbc, const int* types, ProjectionMode mode,
                                          const std::vector<int>& atoms, int& width);

// Several coefficient sets sharing the potential's basis (ensemble members), one neighbour list:
// members[k][mu] holds the n_functions(mu) * ndensity coefficients of member k for element mu.
std::vector<StructureResult> evaluate_structure_members(AtomEvaluator& ev, int n, const double* positions,
                                                        const double* cell, const bool* pbc, const int* types,
                                                        bool need_forces,
                                                        const std::vector<std::vector<std::vector<double>>>& members);

}  // namespace aceuq
