// Angular part of ACE: complex spherical harmonics and the generalized Clebsch-Gordan
// couplings that make B basis functions rotation invariant.
#pragma once
#include <complex>
#include <vector>

namespace aceuq {

// Y_lm(r_hat) for l = 0..lmax, m = 0..l (m < 0 follow from Y_l,-m = (-1)^m conj(Y_lm)), in the
// normalization and phase convention of the reference implementation, and their gradients
// with respect to the Cartesian components of the unit vector as that implementation uses them.
// Index: lm = l*(l+1)/2 + m.
class SphericalHarmonics {
public:
    explicit SphericalHarmonics(int lmax);
    void compute(double x, double y, double z);   // unit vector
    const std::complex<double>& ylm(int l, int m) const { return ylm_[l * (l + 1) / 2 + m]; }  // m >= 0
    const std::complex<double>* dylm(int l, int m) const { return &dylm_[3 * (l * (l + 1) / 2 + m)]; }
    // all m >= 0 values in lm order, and their gradients (3 per lm)
    const std::complex<double>* ylm_data() const { return ylm_.data(); }
    const std::complex<double>* dylm_data() const { return dylm_.data(); }
    int lmax() const { return lmax_; }
private:
    int lmax_;
    // implementation-defined members follow
    std::vector<double> a_, b_;               // three-term recurrence coefficients, index lm
    std::vector<double> diag_, offdiag_;      // Q_mm / Q_{m-1,m-1} and Q_{m+1,m} / (z Q_mm), index m
    std::vector<double> q_, dq_;              // Q_lm(z) = Y_lm / (x+iy)^m and dQ_lm/dz
    std::vector<std::complex<double>> ylm_;   // [lm]
    std::vector<std::complex<double>> dylm_;  // [lm][3]
};

// The terms of one B basis function: B = sum_c Re(gen_cg[c] * prod_t A(mu_t, n_t, l_t, ms[c][t])),
// with the m-combinations reduced to half (terms whose first non-zero m is positive stand
// for their -m partner too) and terms equal under permutation of factors merged.
struct BCouplings {
    int rank = 0;
    std::vector<int> ms;         // num_ms_combs * rank, row-major
    std::vector<double> gen_cg;  // num_ms_combs
    // Columns of ms follow the caller's (mus, ns, ls) order. When the reference merged
    // permutation-equivalent terms it also permuted its (mus, ns, ls, ms) columns; sort_order is
    // that permutation (the reference's column r is our column sort_order[r]); empty otherwise.
    std::vector<int> sort_order;
    int num_ms_combs() const { return rank ? int(gen_cg.size()) : 0; }
};

// Points of m-space couple_b_function visits for angular indices ls: prod (2 l_t + 1) over all
// but the last l (the last m follows from sum(m) = 0). In double: the product overflows int.
double coupling_work(const std::vector<int>& ls);

// couple_b_function refuses functions whose coupling_work exceeds this, so that a small file
// cannot make loading run for minutes (nl = 20 at rank 6: 41^5 = 1.2e8 points). Real potentials
// stay far below: the largest function of a rank-6, lmax_by_orders [0, 6, 4, 3, 2, 2] basis needs
// 3e3, and rank 6 with all l = 6 needs 13^5 = 3.7e5. At the limit a function takes ~0.1 s.
constexpr double kMaxCouplingWork = 1e6;

// mus/ns/ls: the neighbour elements, radial and angular indices of the function (rank = size),
// LS: its intermediate couplings ("lint" in the potential file).
// generated (optional) receives the terms before merging: the reference orders functions by
// them, so the loader needs them to reproduce its function (= projection) order.
BCouplings couple_b_function(const std::vector<int>& mus, const std::vector<int>& ns,
                             const std::vector<int>& ls, const std::vector<int>& LS,
                             BCouplings* generated = nullptr);

}  // namespace aceuq
