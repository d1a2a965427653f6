// A pacemaker B-basis ACE potential: what the potential .yaml file holds, in the form the
// evaluator needs (elements sorted by name, functions in the reference's canonical order).
#pragma once
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "aceuq/angular.hpp"
#include "aceuq/radial.hpp"

namespace aceuq {

// Raised for anything wrong with a user's file: the message names the file and the problem.
class InputError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct Embedding {
    std::string npoti;               // FinnisSinclair | FinnisSinclairShiftedScaled
    int ndensity = 1;
    std::vector<double> parameters;  // [prefactor_p, exponent_p] for p < ndensity
    double rho_core_cut = 100000.0, drho_core_cut = 250.0;
};

// One B basis function centred on an element.
struct BasisFunction {
    int rank = 0;
    std::vector<int> mus, ns, ls, LS;  // ns are 1-based as in the file
    std::vector<double> coeff;         // one per density
    BCouplings couplings;              // rank > 1 only
};

class Potential {
public:
    // Throws InputError naming `path` for a missing, malformed or inconsistent file.
    static std::shared_ptr<Potential> load(const std::string& path);

    const std::string& path() const { return path_; }
    const std::vector<std::string>& elements() const { return elements_; }
    int nelements() const { return int(elements_.size()); }
    // -1 if the element is not in the potential
    int element_index(const std::string& symbol) const;

    int lmax() const { return lmax_; }
    int nradmax() const { return nradmax_; }
    int nradbase() const { return nradbase_; }
    int rankmax() const { return rankmax_; }
    int ndensitymax() const { return ndensitymax_; }
    double cutoff_max() const { return cutoff_max_; }
    double cutoff(int mu_i, int mu_j) const { return bond(mu_i, mu_j).rcut; }

    const Embedding& embedding(int mu) const { return embeddings_.at(mu); }
    const BondSpec& bond(int mu_i, int mu_j) const { return bonds_.at(mu_i * nelements() + mu_j); }
    const RadialTable& radial(int mu_i, int mu_j) const { return *tables_.at(mu_i * nelements() + mu_j); }
    const std::string& inner_cutoff_type() const { return inner_cutoff_type_; }

    // rank-1 functions then higher-rank functions of element mu: the projection order
    const std::vector<BasisFunction>& rank1(int mu) const { return rank1_.at(mu); }
    const std::vector<BasisFunction>& higher(int mu) const { return higher_.at(mu); }
    int n_functions(int mu) const { return int(rank1_.at(mu).size() + higher_.at(mu).size()); }
    // Projections of an atom of element mu: its B functions (linear), or dE/dc over all densities
    // (full, n_functions * ndensity): the width the evaluator writes and the Grader reads.
    int n_projections(int mu, bool full) const { return n_functions(mu) * (full ? embedding(mu).ndensity : 1); }

    // Replace the expansion coefficients of element mu: c[n_functions(mu) * ndensity], function-major.
    void set_coefficients(int mu, const std::vector<double>& c);
    std::vector<double> coefficients(int mu) const;
    // Changes with every set_coefficients, so evaluators know to refresh their copies.
    unsigned long coefficients_version() const { return coefficients_version_; }

    // Identifies everything but the coefficients (elements, radial basis, embedding and its core
    // cut-off, functions), so an active set built for one potential is refused for another, and
    // ensemble members that share it are evaluated together.
    std::string basis_fingerprint() const;
    // The same with the coefficients: what a full-mode active set depends on (dE/dc = F'(rho) B
    // changes with them), so it is refused for the same basis with other coefficients.
    std::string fingerprint(bool with_coefficients) const;

private:
    std::string path_;
    std::vector<std::string> elements_;
    std::map<std::string, int> element_index_;
    int lmax_ = 0, nradmax_ = 0, nradbase_ = 0, rankmax_ = 0, ndensitymax_ = 0;
    double cutoff_max_ = 0, delta_spline_bins_ = 0.001;
    std::string inner_cutoff_type_ = "density";
    unsigned long coefficients_version_ = 0;
    std::vector<Embedding> embeddings_;
    std::vector<BondSpec> bonds_;
    std::vector<std::shared_ptr<RadialTable>> tables_;
    std::vector<std::vector<BasisFunction>> rank1_, higher_;
};

}  // namespace aceuq
