// Angular part of ACE: spherical harmonics in the reference (pyace / ML-PACE) convention and the
// generalized Clebsch-Gordan couplings of B basis functions.
//
// Conventions reproduced (learned from the reference, implemented independently here):
//  * Y_lm is the complex spherical harmonic with Condon-Shortley phase, scaled by sqrt(4*pi)
//    so that Y_00 = 1 (the reference's "Y00 = 1" choice). Rank-1 functions therefore use A = sum R.
//  * dylm(l,m) is the tangential gradient  (I - r r^T) grad Y_ext(r) at the unit vector r, which
//    equals |r| * d Y(r/|r|) / dr. The force on a bond is then Y*dR*r_hat + dylm*R/|r|.
//  * B = sum_c Re( gen_cg[c] * prod_t A(mu_t, n_t, l_t, ms[c][t]) ), with the "half basis": of every
//    m <-> -m partner pair only the one whose first non-zero m is positive is kept and its
//    coefficient doubled (A(-m) = (-1)^m conj A(m) makes the partner's product the complex
//    conjugate, so 2 Re(.) of one equals the sum of both); the all-zero combination keeps factor 1.
//  * Terms whose (mu, n, l, m) multisets coincide are merged, as the reference does when the
//    merge removes at least one term (see couple_b_function below).
#include "aceuq/angular.hpp"

#include "text.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>

namespace aceuq {

// ------------------------------------------------------------------------------------------------
// Spherical harmonics
// ------------------------------------------------------------------------------------------------
//
// With z = cos(theta) and x + i y = sin(theta) e^{i phi} on the unit sphere,
//     Y_lm = Q_lm(z) * (x + i y)^m,   Q_lm(z) = N_lm P_l^m(z) / (1 - z^2)^{m/2},
// N_lm = sqrt((2l+1) (l-m)!/(l+m)!) (4*pi normalization, Y_00 = 1). Q_lm is a polynomial in z, so
// this form is regular at the poles and gives Cartesian derivatives directly. Recurrences for Q:
//     Q_mm     = -sqrt(1 + 1/(2m)) Q_{m-1,m-1},           Q_00 = 1
//     Q_{m+1,m} = sqrt(2m+3) z Q_mm
//     Q_lm     = a_lm (z Q_{l-1,m} - b_lm Q_{l-2,m}),
//     a_lm = sqrt((4l^2-1)/(l^2-m^2)),  b_lm = sqrt(((l-1)^2-m^2)/(4(l-1)^2-1)).

namespace {
inline int lm_index(int l, int m) { return l * (l + 1) / 2 + m; }
}  // namespace

SphericalHarmonics::SphericalHarmonics(int lmax) : lmax_(lmax) {
    // (potential files stop at lmax 50; 10000 keeps every index within an int)
    if (lmax < 0 || lmax > 10000)
        throw std::invalid_argument("SphericalHarmonics: lmax must be within 0..10000, got " + std::to_string(lmax));
    const int n = lm_index(lmax, lmax) + 1;
    a_.assign(n, 0.0);
    b_.assign(n, 0.0);
    q_.assign(n, 0.0);
    dq_.assign(n, 0.0);
    ylm_.assign(n, {0.0, 0.0});
    dylm_.assign(3 * n, {0.0, 0.0});
    diag_.assign(lmax + 1, 0.0);
    offdiag_.assign(lmax + 1, 0.0);
    // Recurrence coefficients depend only on (l, m): compute them once.
    for (int l = 2; l <= lmax; ++l) {
        for (int m = 0; m <= l - 2; ++m) {
            const double l2 = double(l) * l, m2 = double(m) * m, lm1 = double(l - 1) * (l - 1);
            a_[lm_index(l, m)] = std::sqrt((4.0 * l2 - 1.0) / (l2 - m2));
            b_[lm_index(l, m)] = std::sqrt((lm1 - m2) / (4.0 * lm1 - 1.0));
        }
    }
    for (int m = 1; m <= lmax; ++m) diag_[m] = -std::sqrt(1.0 + 0.5 / double(m));
    for (int m = 0; m <= lmax; ++m) offdiag_[m] = std::sqrt(2.0 * m + 3.0);
}

void SphericalHarmonics::compute(double x, double y, double z) {
    // Q_lm(z) and dQ_lm/dz
    q_[0] = 1.0;
    dq_[0] = 0.0;
    for (int m = 1; m <= lmax_; ++m) {
        q_[lm_index(m, m)] = diag_[m] * q_[lm_index(m - 1, m - 1)];
        dq_[lm_index(m, m)] = 0.0;
    }
    for (int m = 0; m < lmax_; ++m) {
        const double t = offdiag_[m] * q_[lm_index(m, m)];
        q_[lm_index(m + 1, m)] = t * z;
        dq_[lm_index(m + 1, m)] = t;
    }
    for (int m = 0; m <= lmax_; ++m) {
        for (int l = m + 2; l <= lmax_; ++l) {
            const int i = lm_index(l, m), i1 = lm_index(l - 1, m), i2 = lm_index(l - 2, m);
            q_[i] = a_[i] * (z * q_[i1] - b_[i] * q_[i2]);
            dq_[i] = a_[i] * (q_[i1] + z * dq_[i1] - b_[i] * dq_[i2]);
        }
    }

    // Y = Q(z) w^m with w = x + i y. Extended to all of R^3 by this formula, its gradient is
    //   dY/dx = m w^{m-1} Q,  dY/dy = i m w^{m-1} Q,  dY/dz = w^m Q'.
    // The reference's dylm is that gradient with the radial component removed, g - (r.g) r,
    // i.e. the gradient of Y(r/|r|) times |r| (independent of how Y was extended off the sphere).
    // Written in real arithmetic: this runs once per neighbour and dominated as complex code.
    double wr = 1.0, wi = 0.0;    // w^m, w = x + i y
    double w1r = 0.0, w1i = 0.0;  // m * w^{m-1}
    for (int m = 0; m <= lmax_; ++m) {
        if (m > 0) {
            w1r = m * wr;
            w1i = m * wi;
            const double t = wr * x - wi * y;
            wi = wr * y + wi * x;
            wr = t;
        }
        for (int l = m; l <= lmax_; ++l) {
            const int i = lm_index(l, m);
            const double q = q_[i], dq = dq_[i];
            ylm_[i] = {wr * q, wi * q};
            const double gxr = w1r * q, gxi = w1i * q;   // dY/dx
            const double gyr = -gxi, gyi = gxr;          // dY/dy = i dY/dx
            const double gzr = wr * dq, gzi = wi * dq;   // dY/dz
            const double rgr = x * gxr + y * gyr + z * gzr;
            const double rgi = x * gxi + y * gyi + z * gzi;
            dylm_[3 * i + 0] = {gxr - rgr * x, gxi - rgi * x};
            dylm_[3 * i + 1] = {gyr - rgr * y, gyi - rgi * y};
            dylm_[3 * i + 2] = {gzr - rgr * z, gzi - rgi * z};
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Clebsch-Gordan coefficients
// ------------------------------------------------------------------------------------------------
namespace {

long double factorial(int n) {
    long double f = 1.0L;
    for (int k = 2; k <= n; ++k) f *= k;
    return f;
}

// Binomial coefficient as an exact 128-bit integer (n <= 120 fits comfortably below 2^127).
__int128 binomial(int n, int k) {
    if (k < 0 || k > n) return 0;
    k = std::min(k, n - k);
    __int128 b = 1;
    for (int i = 1; i <= k; ++i) b = b * (n - k + i) / i;  // exact at every step
    return b;
}

// <j1 m1 j2 m2 | J M>, Condon-Shortley convention, from Racah's closed formula written as
//   CG = sqrt(P) * S / (a! (J-M)! (J+M)!),   a = j1+j2-J,
//   P  = (2J+1) a! (j1-j2+J)! (-j1+j2+J)! / (j1+j2+J+1)! * prod over (j+-m)! of the three momenta,
//   S  = sum_k (-1)^k C(a,k) C(J-M, j1-m1-k) C(J+M, j2+m2-k),
// where S is an integer, evaluated exactly in 128-bit arithmetic. So coefficients that vanish
// "accidentally" (not by a selection rule) come out as exact zeros, and the others are accurate
// to rounding of the final long double product.
double clebsch_gordan(int j1, int m1, int j2, int m2, int J, int M) {
    if (m1 + m2 != M) return 0.0;
    if (J < std::abs(j1 - j2) || J > j1 + j2) return 0.0;
    if (std::abs(m1) > j1 || std::abs(m2) > j2 || std::abs(M) > J) return 0.0;
    if (m1 == 0 && m2 == 0 && ((j1 + j2 + J) % 2 != 0)) return 0.0;
    if (j1 + j2 + J > 60)  // far beyond any ACE basis; keeps the integer sum below 2^127
        throw std::invalid_argument("clebsch_gordan: angular momenta too large (j1+j2+J > 60)");

    const int a = j1 + j2 - J;
    __int128 S = 0;
    for (int k = 0; k <= a; ++k) {
        const __int128 t = binomial(a, k) * binomial(J - M, j1 - m1 - k) * binomial(J + M, j2 + m2 - k);
        S += (k % 2) ? -t : t;
    }
    if (S == 0) return 0.0;
    const long double P = (2.0L * J + 1.0L) * factorial(a) * factorial(j1 - j2 + J) * factorial(-j1 + j2 + J) /
                          factorial(j1 + j2 + J + 1) * factorial(J + M) * factorial(J - M) * factorial(j1 + m1) *
                          factorial(j1 - m1) * factorial(j2 + m2) * factorial(j2 - m2);
    const long double val =
        std::sqrt(P) * static_cast<long double>(S) / (factorial(a) * factorial(J - M) * factorial(J + M));
    return static_cast<double>(val);
}

// Coupling trees. Leaves 0..rank-1 are the single-particle (l_t, m_t); internal nodes rank..2rank-3
// carry the intermediate couplings LS[0..rank-3]; node 2rank-2 is the root, coupled to (L, M) = (0, 0).
// Leaves are coupled in pairs, then the intermediates in pairs, an odd leaf last (the reference's
// tree; order within a node matters for the sign of the CG coefficient):
//   rank 2: (l0 l1)0
//   rank 3: ((l0 l1)L0 l2)0                       -> L0 == l2
//   rank 4: ((l0 l1)L0 (l2 l3)L1)0                -> L0 == L1
//   rank 5: (((l0 l1)L0 (l2 l3)L1)L2 l4)0         -> L2 == l4
//   rank 6: ((l4 l5)L2 ((l0 l1)L0 (l2 l3)L1)L3)0, root node ordered (L2, L3) -> L2 == L3
struct Node {
    int a, b, c;  // couple node a with node b into node c
};

std::vector<Node> coupling_tree(int rank) {
    const int root = 2 * rank - 2;
    switch (rank) {
        case 1: return {};
        case 2: return {{0, 1, root}};
        case 3: return {{0, 1, 3}, {3, 2, root}};
        case 4: return {{0, 1, 4}, {2, 3, 5}, {4, 5, root}};
        case 5: return {{0, 1, 5}, {2, 3, 6}, {5, 6, 7}, {7, 4, root}};
        case 6: return {{0, 1, 6}, {2, 3, 7}, {4, 5, 8}, {6, 7, 9}, {8, 9, root}};
        default: break;
    }
    throw std::invalid_argument("couple_b_function: rank " + std::to_string(rank) +
                                " is not supported (supported ranks: 1..6)");
}

}  // namespace

double coupling_work(const std::vector<int>& ls) {
    double w = 1.0;
    for (size_t t = 0; t + 1 < ls.size(); ++t) w *= 2.0 * ls[t] + 1.0;
    return w;
}

// ------------------------------------------------------------------------------------------------
// B-function couplings
// ------------------------------------------------------------------------------------------------
BCouplings couple_b_function(const std::vector<int>& mus, const std::vector<int>& ns,
                             const std::vector<int>& ls, const std::vector<int>& LS, BCouplings* generated) {
    const int rank = int(ls.size());
    const std::string what = "couple_b_function(mus=" + text::join_ints(mus) + ", ns=" + text::join_ints(ns) + ", ls=" + text::join_ints(ls) +
                             ", LS=" + text::join_ints(LS) + "): ";
    if (rank < 1 || rank > 6)
        throw std::invalid_argument(what + "rank " + std::to_string(rank) + " is not supported (supported ranks: 1..6)");
    if (int(mus.size()) != rank || int(ns.size()) != rank)
        throw std::invalid_argument(what + "mus, ns and ls must have the same length (the rank)");
    for (int l : ls)
        if (l < 0) throw std::invalid_argument(what + "ls must be >= 0");
    for (int n : ns)
        if (n < 1) throw std::invalid_argument(what + "ns are 1-based and must be >= 1");
    const int nL = rank > 2 ? rank - 2 : 0;
    if (int(LS.size()) != nL)
        throw std::invalid_argument(what + "LS must have " + std::to_string(nL) + " entries for rank " +
                                    std::to_string(rank));
    int lsum = 0;
    for (int l : ls) lsum += l;
    // an intermediate L couples some of the ls, so it cannot exceed their sum (nor would the
    // sizes computed from it fit in an int)
    for (int L : LS)
        if (L < 0 || L > lsum)
            throw std::invalid_argument(what + "LS must be >= 0 and <= the sum of ls (" + std::to_string(lsum) +
                                        "), got " + std::to_string(L));
    if (lsum % 2 != 0) throw std::invalid_argument(what + "sum of ls must be even (parity-invariant function)");
    // The root couples its two children to L = 0, which needs them equal.
    if (rank == 1 && ls[0] != 0) throw std::invalid_argument(what + "rank-1 functions need ls = [0]");
    if (rank == 2 && ls[0] != ls[1]) throw std::invalid_argument(what + "rank-2 functions need ls[0] == ls[1]");
    if ((rank == 3 || rank == 5) && LS.back() != ls.back())
        throw std::invalid_argument(what + "last LS must equal last l for rank 3 and 5");
    if ((rank == 4 || rank == 6) && LS[nL - 1] != LS[nL - 2])
        throw std::invalid_argument(what + "last two LS must be equal for rank 4 and 6");

    const std::vector<Node> tree = coupling_tree(rank);
    std::vector<int> lsLS(2 * rank - 1, 0);  // angular momentum of every tree node; root has 0
    for (int t = 0; t < rank; ++t) lsLS[t] = ls[t];
    for (int k = 0; k < nL; ++k) lsLS[rank + k] = LS[k];

    const double work = coupling_work(ls);
    if (!(work <= kMaxCouplingWork))
        throw std::invalid_argument(what + "would enumerate " + text::number(work, 3) +
                                    " m-combinations, more than the limit of " + text::number(kMaxCouplingWork, 3));

    // m-space in the reference's order: m_0 fastest, m_{rank-1} slowest. The last m is fixed by
    // sum(m) = 0, so only the first rank-1 are enumerated; the rows are then grouped by the last
    // m in increasing order, which restores the reference's order without visiting the points
    // that cannot have sum(m) = 0 (a factor 2 l_last + 1 of work).
    const int last = rank - 1, l_last = ls[last];
    std::vector<std::vector<std::vector<int>>> rows_by_mlast(2 * size_t(l_last) + 1);
    std::vector<std::vector<double>> cgs_by_mlast(rows_by_mlast.size());
    // Each tree node couples fixed (j_a, j_b, j_c), so its CG coefficients depend on (m_a, m_b)
    // only: computed once each (NaN = not yet), they stop dominating the time at large l.
    std::vector<std::vector<double>> cg_memo(tree.size());
    for (size_t k = 0; k < tree.size(); ++k)
        cg_memo[k].assign(size_t(2 * lsLS[tree[k].a] + 1) * size_t(2 * lsLS[tree[k].b] + 1),
                          std::numeric_limits<double>::quiet_NaN());
    std::vector<int> ms(rank), mM(2 * rank - 1);
    for (int t = 0; t < last; ++t) ms[t] = -ls[t];
    while (true) {
        int msum = 0;
        for (int t = 0; t < last; ++t) msum += ms[t];
        ms[last] = -msum;
        int sign = 0;  // sign of the first non-zero m
        for (int m : ms)
            if (m != 0) {
                sign = m > 0 ? 1 : -1;
                break;
            }
        if (std::abs(ms[last]) <= l_last && sign >= 0) {
            for (int t = 0; t < rank; ++t) mM[t] = ms[t];
            double c = 1.0;
            bool ok = true;
            for (size_t k = 0; k < tree.size(); ++k) {
                const Node& nd = tree[k];
                mM[nd.c] = mM[nd.a] + mM[nd.b];
                if (std::abs(mM[nd.c]) > lsLS[nd.c]) {  // coupled m out of range: not a valid path
                    ok = false;
                    break;
                }
                double& cg = cg_memo[k][size_t(mM[nd.a] + lsLS[nd.a]) * size_t(2 * lsLS[nd.b] + 1) +
                                        size_t(mM[nd.b] + lsLS[nd.b])];
                if (std::isnan(cg))
                    cg = clebsch_gordan(lsLS[nd.a], mM[nd.a], lsLS[nd.b], mM[nd.b], lsLS[nd.c], mM[nd.c]);
                c *= cg;
                if (c == 0.0) break;
            }
            if (ok && c != 0.0) {
                if (sign > 0) c *= 2.0;  // half basis: this term stands for itself and its -m partner
                rows_by_mlast[size_t(ms[last] + l_last)].push_back(ms);
                cgs_by_mlast[size_t(ms[last] + l_last)].push_back(c);
            }
        }
        // next point of the first rank-1 dimensions of m-space
        int t = 0;
        while (t < last && ms[t] == ls[t]) {
            ms[t] = -ls[t];
            ++t;
        }
        if (t == last) break;
        ++ms[t];
    }
    std::vector<std::vector<int>> rows;
    std::vector<double> cgs;
    for (size_t k = 0; k < rows_by_mlast.size(); ++k) {
        rows.insert(rows.end(), rows_by_mlast[k].begin(), rows_by_mlast[k].end());
        cgs.insert(cgs.end(), cgs_by_mlast[k].begin(), cgs_by_mlast[k].end());
    }
    if (rows.empty())
        throw std::invalid_argument(what + "no m-combination survives the couplings (triangle rule violated?)");
    if (generated) {
        generated->rank = rank;
        generated->ms.clear();
        for (const auto& r : rows) generated->ms.insert(generated->ms.end(), r.begin(), r.end());
        generated->gen_cg = cgs;
        generated->sort_order.clear();
    }

    // Merge terms that are the same product of A's: the product is symmetric under permuting
    // factors, so sort the (mu, n, l, m) tuples of each term and add coefficients of equal keys.
    // The reference stores the merged form only when it is shorter (merges happened, or a sum
    // cancelled below 1e-15), with (mus, ns, ls) permuted into sorted order and the terms ordered
    // lexicographically by their sorted m-vector. We reproduce that term list and row order but
    // keep the caller's column order (column sort_order[r] of ours == column r of the reference).
    // One known difference: where a CG coefficient vanishes accidentally (not by a selection rule)
    // we get an exact zero and drop the term, while the reference's recursive 3j algorithm
    // sometimes yields ~1e-17, keeps that term, and then merges only to remove it again. The terms
    // and coefficients are the same either way; only the row order (merged/sorted form or not)
    // can differ, for a few percent of the functions of a large basis.
    using Key = std::tuple<int, int, int, int, int>;
    std::vector<int> sort_order(rank);
    std::map<std::vector<int>, double> merged;
    std::vector<Key> v(rank);
    for (size_t c = 0; c < rows.size(); ++c) {
        for (int t = 0; t < rank; ++t) v[t] = Key(mus[t], ns[t], ls[t], rows[c][t], t);
        std::sort(v.begin(), v.end());
        if (c == 0)
            for (int t = 0; t < rank; ++t) sort_order[t] = std::get<4>(v[t]);
        std::vector<int> key(rank);
        for (int t = 0; t < rank; ++t) key[t] = std::get<3>(v[t]);
        merged[key] += cgs[c];
    }
    for (auto it = merged.begin(); it != merged.end();) {
        if (std::abs(it->second) < 1e-15)
            it = merged.erase(it);
        else
            ++it;
    }

    BCouplings out;
    out.rank = rank;
    if (merged.size() < rows.size()) {
        out.sort_order = sort_order;
        out.ms.reserve(merged.size() * rank);
        std::vector<int> row(rank);
        for (const auto& kv : merged) {
            for (int r = 0; r < rank; ++r) row[sort_order[r]] = kv.first[r];
            out.ms.insert(out.ms.end(), row.begin(), row.end());
            out.gen_cg.push_back(kv.second);
        }
    } else {
        for (size_t c = 0; c < rows.size(); ++c) {
            out.ms.insert(out.ms.end(), rows[c].begin(), rows[c].end());
            out.gen_cg.push_back(cgs[c]);
        }
    }
    if (out.gen_cg.empty())
        throw std::invalid_argument(what + "all m-combinations cancel: the function is identically zero");
    return out;
}

}  // namespace aceuq
