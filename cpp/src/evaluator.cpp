#include "aceuq/evaluator.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "aceuq/neighbors.hpp"
#include "text.hpp"

namespace aceuq {
namespace {

using cdouble = std::complex<double>;

// Finnis-Sinclair embedding terms F(rho) and dF/drho.
void embed_fs(double rho, double m, double& F, double& dF) {
    const double w = 1e6;
    const double lambda = std::pow(1.0 / w, m - 1.0);
    if (std::abs(rho) <= 1e-10) {
        F = lambda * rho;
        dF = lambda;
        return;
    }
    const double a = std::abs(rho);
    const double am = std::pow(a, m);
    const double wa3 = std::pow(w * a, 3);
    const double g = wa3 > 30.0 ? 0.0 : std::exp(-wa3);
    const double sign = std::signbit(rho) ? -1.0 : 1.0;
    F = sign * ((1.0 - g) * am + lambda * g * a);
    const double dg = -3.0 * w * w * w * a * a * g;
    dF = m * std::pow(a, m - 1.0) * (1.0 - g) - am * dg + lambda * dg * a + lambda * g;
}

void embed_fs_shifted_scaled(double rho, double m, double& F, double& dF) {
    if (std::abs(m - 1.0) < 1e-10) {
        F = rho;
        dF = 1;
        return;
    }
    const double a = std::abs(rho);
    const double e = std::exp(-a);
    const double nx = 1.0 / m;
    const double xoff = std::pow(nx, nx / (1.0 - nx)) * e;
    const double yoff = std::pow(nx, 1.0 / (1.0 - nx)) * e;
    const double sign = std::signbit(rho) ? -1.0 : 1.0;
    F = sign * (std::pow(xoff + a, m) - yoff);
    dF = yoff + m * (1.0 - xoff) * std::pow(xoff + a, m - 1.0);
}

}  // namespace

// Per element: the higher-rank functions flattened into products of A's.
struct ElementPlan {
    int ndensity = 1;
    int n_rank1 = 0, n_higher = 0;
    std::vector<int> r1_index;       // A1 index (mu_j * nradbase + n) per rank-1 function
    std::vector<double> r1_coeff;    // [n_rank1][ndensity]
    std::vector<int> f_rank, f_term_begin;  // per higher function; term range in terms
    std::vector<double> f_coeff;     // [n_higher][ndensity]
    std::vector<int> t_factor_begin; // per term: first entry in factors
    std::vector<double> t_cg;        // per term
    std::vector<int> factors;        // A index per factor
};

struct AtomEvaluator::Scratch {
    unsigned long coefficients_version = 0;
    int ne, nradbase, nradmax, lmax, L2, nlm_half, nfr;
    std::vector<ElementPlan> plans;
    SphericalHarmonics sh;
    RadialValues rv;
    std::vector<cdouble> A, W;          // [ne][nradmax][L2] (all m)
    std::vector<cdouble> Wf;            // [ne][nradmax][nlm_half]: W folded onto m >= 0
    std::vector<cdouble> WR, WD;        // [nlm_half]: sum_n W R_nl and sum_n W dR_nl
    std::vector<double> A1, W1;         // [ne][nradbase]
    std::vector<cdouble> dB;            // per factor of the current element
    std::vector<double> b;              // basis values (linear projections) of the current atom
    int nneigh = 0, nk = 0, nearest = -1;   // neighbours passed, within the cutoff; ZBL nearest
    double rho_core = 0, d_nearest = 0;
    // per neighbour caches
    std::vector<int> nb_mu, nb_index;
    std::vector<double> nb_r, nb_rhat, nb_R, nb_dR, nb_dg, nb_dcr;
    std::vector<cdouble> nb_Y, nb_dY;
    std::vector<double> rho, dF;
    void load_coefficients(const Potential& p) {
        for (int mu = 0; mu < ne; ++mu) {
            ElementPlan& ep = plans[mu];
            ep.r1_coeff.clear();
            ep.f_coeff.clear();
            for (const auto& f : p.rank1(mu)) ep.r1_coeff.insert(ep.r1_coeff.end(), f.coeff.begin(), f.coeff.end());
            for (const auto& f : p.higher(mu)) ep.f_coeff.insert(ep.f_coeff.end(), f.coeff.begin(), f.coeff.end());
        }
        coefficients_version = p.coefficients_version();
    }
    explicit Scratch(int lmax_) : sh(lmax_) {}
    int a_index(int mu, int n, int l, int m) const { return (mu * nradmax + n) * L2 + l * l + l + m; }
};

AtomEvaluator::AtomEvaluator(std::shared_ptr<const Potential> potential) : pot_(std::move(potential)) {
    const Potential& p = *pot_;
    s_ = std::make_shared<Scratch>(p.lmax());
    Scratch& s = *s_;
    s.ne = p.nelements();
    s.nradbase = p.nradbase();
    s.nradmax = p.nradmax();
    s.lmax = p.lmax();
    s.L2 = (s.lmax + 1) * (s.lmax + 1);
    s.nlm_half = (s.lmax + 1) * (s.lmax + 2) / 2;
    s.nfr = s.nradmax * (s.lmax + 1);
    s.A.assign(size_t(s.ne) * s.nradmax * s.L2, 0.0);
    s.W = s.A;
    s.A1.assign(size_t(s.ne) * s.nradbase, 0.0);
    s.W1 = s.A1;
    s.rho.resize(p.ndensitymax());
    s.dF.resize(p.ndensitymax());
    s.plans.resize(s.ne);
    for (int mu = 0; mu < s.ne; ++mu) {
        ElementPlan& ep = s.plans[mu];
        ep.ndensity = p.embedding(mu).ndensity;
        for (const auto& f : p.rank1(mu)) {
            ep.r1_index.push_back(f.mus[0] * s.nradbase + f.ns[0] - 1);
        }
        ep.n_rank1 = int(p.rank1(mu).size());
        for (const auto& f : p.higher(mu)) {
            ep.f_rank.push_back(f.rank);
            ep.f_term_begin.push_back(int(ep.t_cg.size()));
            const BCouplings& c = f.couplings;
            for (int t = 0; t < c.num_ms_combs(); ++t) {
                ep.t_factor_begin.push_back(int(ep.factors.size()));
                ep.t_cg.push_back(c.gen_cg[t]);
                for (int r = 0; r < f.rank; ++r)
                    ep.factors.push_back(s.a_index(f.mus[r], f.ns[r] - 1, f.ls[r], c.ms[size_t(t) * f.rank + r]));
            }
        }
        ep.n_higher = int(p.higher(mu).size());
        ep.f_term_begin.push_back(int(ep.t_cg.size()));
        ep.t_factor_begin.push_back(int(ep.factors.size()));
    }
    s.load_coefficients(p);
}

void AtomEvaluator::compute(int mu_i, int nneigh, const int* mu_j, const double* rij, bool need_forces,
                            ProjectionMode mode, AtomResult& out, double* projections_to) {
    const Potential& p = *pot_;
    Scratch& s = *s_;
    if (mu_i < 0 || mu_i >= s.ne) throw std::invalid_argument("AtomEvaluator: bad central element index");
    // pyace loads and evaluates an element without B functions (an empty 'nbody'), so the loader
    // accepts it too; but its atoms have no projections, which only the potential can explain.
    if (mode != ProjectionMode::None && p.n_functions(mu_i) == 0)
        throw InputError("potential file '" + p.path() + "': element " + p.elements()[mu_i] +
                         " has no B functions (its 'nbody' list is empty), so its atoms have no projections");
    if (mode != ProjectionMode::None && !projections_to)
        throw std::invalid_argument("AtomEvaluator: projections requested without a buffer for them");
    if (s.coefficients_version != p.coefficients_version()) s.load_coefficients(p);
    prepare(mu_i, nneigh, mu_j, rij, need_forces);
    const ElementPlan& ep = s.plans[mu_i];
    finish(mu_i, ep.r1_coeff.data(), ep.f_coeff.data(), need_forces, mode, out, projections_to);
}

int AtomEvaluator::projection_width(int mu_i, ProjectionMode mode) const {
    return mode == ProjectionMode::None ? 0 : pot_->n_projections(mu_i, mode == ProjectionMode::Full);
}

void AtomEvaluator::compute_members(int mu_i, int nneigh, const int* mu_j, const double* rij, bool need_forces,
                                    const std::vector<const double*>& member_coeffs, std::vector<AtomResult>& out) {
    Scratch& s = *s_;
    if (mu_i < 0 || mu_i >= s.ne) throw std::invalid_argument("AtomEvaluator: bad central element index");
    prepare(mu_i, nneigh, mu_j, rij, need_forces);
    const ElementPlan& ep = s.plans[mu_i];
    out.resize(member_coeffs.size());
    for (size_t k = 0; k < member_coeffs.size(); ++k) {
        const double* c = member_coeffs[k];
        finish(mu_i, c, c + size_t(ep.n_rank1) * ep.ndensity, need_forces, ProjectionMode::None, out[k], nullptr);
    }
}

// Everything that does not depend on the expansion coefficients: neighbour caches, A, B and
// the partial products dB.
void AtomEvaluator::prepare(int mu_i, int nneigh, const int* mu_j, const double* rij, bool need_forces) {
    const Potential& p = *pot_;
    Scratch& s = *s_;
    const ElementPlan& ep = s.plans[mu_i];
    const bool zbl = p.inner_cutoff_type() == "zbl";
    s.nneigh = nneigh;

    std::fill(s.A.begin(), s.A.end(), 0.0);
    std::fill(s.A1.begin(), s.A1.end(), 0.0);
    s.nb_mu.clear();
    s.nb_index.clear();
    s.nb_r.clear();
    s.nb_rhat.clear();
    const size_t nfr = s.nfr, nlm = s.nlm_half;
    s.nb_R.resize(nneigh * nfr);
    s.nb_dR.resize(nneigh * nfr);
    s.nb_Y.resize(nneigh * nlm);
    s.nb_dY.resize(nneigh * nlm * 3);
    s.nb_dg.resize(size_t(nneigh) * s.nradbase);
    s.nb_dcr.resize(nneigh);

    double& rho_core = s.rho_core;
    int& nearest = s.nearest;
    double& d_nearest = s.d_nearest;
    rho_core = 0;
    nearest = -1;
    d_nearest = p.cutoff_max();
    int k = 0;  // neighbours within the cutoff
    for (int jj = 0; jj < nneigh; ++jj) {
        const int mj = mu_j[jj];
        if (mj < 0) continue;
        const double* d = rij + 3 * jj;
        const double r = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
        const RadialTable& tab = p.radial(mu_i, mj);
        if (r >= tab.cutoff()) continue;
        if (zbl) {
            const BondSpec& b = p.bond(mu_i, mj);
            const double dd = r - (b.r_in - b.delta_in);
            if (dd < d_nearest) {
                d_nearest = dd;
                nearest = k;
            }
        }
        const double inv_r = 1.0 / r;
        const double x = d[0] * inv_r, y = d[1] * inv_r, z = d[2] * inv_r;
        s.nb_mu.push_back(mj);
        s.nb_index.push_back(jj);
        s.nb_r.push_back(r);
        s.nb_rhat.insert(s.nb_rhat.end(), {x, y, z});

        tab.evaluate(r, s.rv);
        s.sh.compute(x, y, z);
        double* A1 = &s.A1[size_t(mj) * s.nradbase];
        double* dg = &s.nb_dg[size_t(k) * s.nradbase];
        for (int n = 0; n < s.nradbase; ++n) {
            A1[n] += s.rv.gr[n];  // Y00 = 1 for rank 1, as in the reference
            dg[n] = s.rv.dgr[n];
        }
        cdouble* Y = &s.nb_Y[k * nlm];
        cdouble* dY = &s.nb_dY[k * nlm * 3];
        std::copy(s.sh.ylm_data(), s.sh.ylm_data() + nlm, Y);
        std::copy(s.sh.dylm_data(), s.sh.dylm_data() + 3 * nlm, dY);
        double* R = &s.nb_R[k * nfr];
        double* dR = &s.nb_dR[k * nfr];
        for (size_t q = 0; q < nfr; ++q) {
            R[q] = s.rv.fr[q];
            dR[q] = s.rv.dfr[q];
        }
        for (int n = 0; n < s.nradmax; ++n) {
            cdouble* A = &s.A[s.a_index(mj, n, 0, 0)];
            for (int l = 0; l <= s.lmax; ++l) {
                const double Rnl = R[n * (s.lmax + 1) + l];
                const cdouble* Yl = &Y[l * (l + 1) / 2];
                for (int m = 0; m <= l; ++m) A[l * l + l + m] += Rnl * Yl[m];
            }
        }
        rho_core += s.rv.cr;
        s.nb_dcr[k] = s.rv.dcr;
        ++k;
    }
    s.nk = k;

    // A(l,-m) = (-1)^m conj(A(l,m))
    for (int mu = 0; mu < s.ne; ++mu)
        for (int n = 0; n < s.nradmax; ++n) {
            cdouble* A = &s.A[s.a_index(mu, n, 0, 0)];
            for (int l = 1; l <= s.lmax; ++l)
                for (int m = 1; m <= l; ++m)
                    A[l * l + l - m] = (m % 2 ? -1.0 : 1.0) * std::conj(A[l * l + l + m]);
        }

    // ---- basis values b (rank 1: A1; higher: B = Re(sum_c g_c prod_t A)) ----
    s.b.resize(size_t(ep.n_rank1) + ep.n_higher);
    for (int f = 0; f < ep.n_rank1; ++f) s.b[f] = s.A1[ep.r1_index[f]];
    s.dB.resize(ep.factors.size());
    for (int f = 0; f < ep.n_higher; ++f) {
        const int rank = ep.f_rank[f];
        double Bf = 0;
        for (int t = ep.f_term_begin[f]; t < ep.f_term_begin[f + 1]; ++t) {
            const int* fac = &ep.factors[ep.t_factor_begin[t]];
            cdouble prod = 1.0;
            if (need_forces) {
                // prefix products in dB, then times suffix products: dB[r] = prod_{s != r} A_s
                cdouble* dB = &s.dB[ep.t_factor_begin[t]];
                for (int r = 0; r < rank; ++r) {
                    dB[r] = prod;
                    prod *= s.A[fac[r]];
                }
                cdouble suffix = 1.0;
                for (int r = rank - 1; r >= 0; --r) {
                    dB[r] *= suffix;
                    suffix *= s.A[fac[r]];
                }
            } else {
                for (int r = 0; r < rank; ++r) prod *= s.A[fac[r]];
            }
            Bf += ep.t_cg[t] * prod.real();
        }
        s.b[ep.n_rank1 + f] = Bf;
    }
}

// Energy, projections and forces of one coefficient set (r1: rank-1 functions, f: higher ones;
// [function][density]) from what prepare() left.
void AtomEvaluator::finish(int mu_i, const double* r1_coeff, const double* f_coeff, bool need_forces,
                           ProjectionMode mode, AtomResult& out, double* projections_to) {
    const Potential& p = *pot_;
    Scratch& s = *s_;
    const ElementPlan& ep = s.plans[mu_i];
    const int nd = ep.ndensity;
    const bool zbl = p.inner_cutoff_type() == "zbl";
    const int nneigh = s.nneigh, nk = s.nk, nearest = s.nearest;
    const double rho_core = s.rho_core, d_nearest = s.d_nearest;
    const size_t nfr = s.nfr, nlm = s.nlm_half;
    const int nf = ep.n_rank1 + ep.n_higher;
    std::fill(s.rho.begin(), s.rho.end(), 0.0);
    for (int f = 0; f < ep.n_rank1; ++f)
        for (int q = 0; q < nd; ++q) s.rho[q] += r1_coeff[f * nd + q] * s.b[f];
    for (int f = 0; f < ep.n_higher; ++f)
        for (int q = 0; q < nd; ++q) s.rho[q] += f_coeff[f * nd + q] * s.b[ep.n_rank1 + f];
    double* proj = projections_to;
    if (mode == ProjectionMode::Linear) std::copy(s.b.begin(), s.b.begin() + nf, proj);

    const Embedding& emb = p.embedding(mu_i);
    double e_emb = 0;
    for (int q = 0; q < nd; ++q) {
        double F, dF;
        if (emb.npoti == "FinnisSinclairShiftedScaled")
            embed_fs_shifted_scaled(s.rho[q], emb.parameters[2 * q + 1], F, dF);
        else
            embed_fs(s.rho[q], emb.parameters[2 * q + 1], F, dF);
        e_emb += emb.parameters[2 * q] * F;
        s.dF[q] = emb.parameters[2 * q] * dF;
    }
    if (mode == ProjectionMode::Full) {  // dE/dc, density-major
        for (int q = 0; q < nd; ++q)
            for (int f = 0; f < nf; ++f) proj[size_t(q) * nf + f] = s.dF[q] * s.b[f];
    }

    double fcut, dfcut, dE_drho_core, dE_dfcut = 0;
    if (zbl) {
        if (nearest >= 0) {
            const BondSpec& b = p.bond(mu_i, s.nb_mu[nearest]);
            poly_cutoff(b.delta_in - d_nearest, b.delta_in, b.delta_in, fcut, dfcut);
            dfcut = -dfcut;
        } else {
            fcut = 1;
            dfcut = 0;
        }
        out.energy = e_emb * fcut + rho_core * (1 - fcut);
        dE_drho_core = 1 - fcut;
        dE_dfcut = (e_emb - rho_core) * dfcut;
    } else {
        const double rc = emb.rho_core_cut, drc = emb.drho_core_cut;
        if (rho_core >= rc) {
            fcut = 0;
            dfcut = 0;
        } else if (rho_core <= rc - drc) {
            fcut = 1;
            dfcut = 0;
        } else {
            poly_cutoff(rho_core, rc, drc, fcut, dfcut);
        }
        out.energy = e_emb * fcut + rho_core;
        dE_drho_core = e_emb * dfcut + 1;
    }
    if (!need_forces) return;

    // ---- forces: W = dE/dA, then dE/dr_ij through dA/dr_ij ----
    for (int q = 0; q < nd; ++q) s.dF[q] *= fcut;
    std::fill(s.W.begin(), s.W.end(), 0.0);
    std::fill(s.W1.begin(), s.W1.end(), 0.0);
    for (int f = 0; f < ep.n_rank1; ++f) {
        double w = 0;
        for (int q = 0; q < nd; ++q) w += s.dF[q] * r1_coeff[f * nd + q];
        s.W1[ep.r1_index[f]] += w;
    }
    for (int f = 0; f < ep.n_higher; ++f) {
        double theta = 0;
        for (int q = 0; q < nd; ++q) theta += s.dF[q] * f_coeff[f * nd + q];
        if (theta == 0) continue;
        const int rank = ep.f_rank[f];
        for (int t = ep.f_term_begin[f]; t < ep.f_term_begin[f + 1]; ++t) {
            const double w = theta * ep.t_cg[t];
            const int* fac = &ep.factors[ep.t_factor_begin[t]];
            const cdouble* dB = &s.dB[ep.t_factor_begin[t]];
            for (int r = 0; r < rank; ++r) s.W[fac[r]] += w * dB[r];
        }
    }
    // dA(l,-m) = (-1)^m conj(dA(l,m)): fold the -m weights onto +m, into a compact m >= 0 copy
    s.Wf.resize(size_t(s.ne) * s.nradmax * nlm);
    for (int mu = 0; mu < s.ne; ++mu)
        for (int n = 0; n < s.nradmax; ++n) {
            const cdouble* W = &s.W[s.a_index(mu, n, 0, 0)];
            cdouble* Wf = &s.Wf[(size_t(mu) * s.nradmax + n) * nlm];
            for (int l = 0, lm = 0; l <= s.lmax; ++l)
                for (int m = 0; m <= l; ++m, ++lm)
                    Wf[lm] = m == 0 ? W[l * l + l] : W[l * l + l + m] + (m % 2 ? -1.0 : 1.0) * std::conj(W[l * l + l - m]);
        }

    // dE/dr_ij = sum_nlm Re(W_nlm (dR_nl Y_lm r_hat + R_nl dY_lm / r)); summing over n first
    // leaves one pass over lm for the angular gradient.
    out.dE_drij.assign(size_t(3) * nneigh, 0.0);
    s.WR.resize(nlm);
    s.WD.resize(nlm);
    for (int kk = 0; kk < nk; ++kk) {
        const int mj = s.nb_mu[kk];
        const double* rh = &s.nb_rhat[3 * kk];
        const double inv_r = 1.0 / s.nb_r[kk];
        double radial_part = 0;  // coefficient of r_hat
        const double* W1 = &s.W1[size_t(mj) * s.nradbase];
        const double* dg = &s.nb_dg[size_t(kk) * s.nradbase];
        for (int n = 0; n < s.nradbase; ++n) radial_part += W1[n] * dg[n];
        const double* R = &s.nb_R[kk * nfr];
        const double* dR = &s.nb_dR[kk * nfr];
        std::fill(s.WR.begin(), s.WR.end(), 0.0);
        std::fill(s.WD.begin(), s.WD.end(), 0.0);
        for (int n = 0; n < s.nradmax; ++n) {
            const cdouble* Wf = &s.Wf[(size_t(mj) * s.nradmax + n) * nlm];
            const double* Rn = R + n * (s.lmax + 1);
            const double* dRn = dR + n * (s.lmax + 1);
            for (int l = 0, lm = 0; l <= s.lmax; ++l) {
                const double a = Rn[l], b = dRn[l];
                for (int m = 0; m <= l; ++m, ++lm) {
                    s.WR[lm] += a * Wf[lm];
                    s.WD[lm] += b * Wf[lm];
                }
            }
        }
        const cdouble* Y = &s.nb_Y[kk * nlm];
        const cdouble* dY = &s.nb_dY[kk * nlm * 3];
        double g[3] = {0, 0, 0};
        for (size_t lm = 0; lm < nlm; ++lm) {
            const cdouble wr = s.WR[lm], wd = s.WD[lm];
            radial_part += wd.real() * Y[lm].real() - wd.imag() * Y[lm].imag();
            for (int c = 0; c < 3; ++c) g[c] += wr.real() * dY[3 * lm + c].real() - wr.imag() * dY[3 * lm + c].imag();
        }
        radial_part += dE_drho_core * s.nb_dcr[kk];
        if (zbl && kk == nearest) radial_part += dE_dfcut;
        double* o = &out.dE_drij[3 * s.nb_index[kk]];
        for (int c = 0; c < 3; ++c) o[c] = radial_part * rh[c] + g[c] * inv_r;
    }
}

namespace {

void check_types(const Potential& p, int n, const int* types) {
    for (int i = 0; i < n; ++i)
        if (types[i] < 0 || types[i] >= p.nelements())
            throw std::invalid_argument("evaluate_structure: atom " + std::to_string(i) + " has no element of the potential");
}

// Runs f, the evaluation of atom i; a geometry error from it (the radial table's "atoms too
// close") is rethrown naming atom i and its nearest neighbour, as the LAMMPS pair style names the
// atom.
template <class F>
void naming_atom(const NeighborList& nl, int i, F&& f) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        long nearest = -1;
        for (long q = nl.offsets[i]; q < nl.offsets[i + 1]; ++q)
            if (nearest < 0 || nl.dist[q] < nl.dist[nearest]) nearest = q;
        std::string where = "atom " + std::to_string(i);
        if (nearest >= 0)
            where += " (nearest neighbour: atom " + std::to_string(nl.index[nearest]) + " at " +
                     text::number(nl.dist[nearest], 6) + " Å)";
        throw std::invalid_argument(where + ": " + e.what());
    }
}

StructureResult empty_result(int n, bool need_forces) {
    StructureResult res;
    res.energies.assign(n, 0.0);
    if (need_forces) {
        res.forces.assign(size_t(3) * n, 0.0);
        res.virial.assign(9, 0.0);
    }
    return res;
}

// Adds atom i's energy and its pair forces / virial to res.
void accumulate(StructureResult& res, int i, const AtomResult& ar, const NeighborList& nl, bool need_forces) {
    res.energies[i] = ar.energy;
    res.energy += ar.energy;
    if (!need_forces) return;
    const long b = nl.offsets[i], e = nl.offsets[i + 1];
    for (long q = b; q < e; ++q) {
        const double* g = &ar.dE_drij[3 * (q - b)];
        const int j = nl.index[q];
        const double* d = &nl.dvec[3 * q];
        for (int c = 0; c < 3; ++c) {
            res.forces[3 * i + c] += g[c];
            res.forces[3 * j + c] -= g[c];
            for (int c2 = 0; c2 < 3; ++c2) res.virial[3 * c + c2] += d[c] * g[c2];
        }
    }
}

// The element of each of atom i's neighbours, in the order of the neighbour list.
void neighbour_types(const NeighborList& nl, const int* types, int i, std::vector<int>& mu_j) {
    const long b = nl.offsets[i], e = nl.offsets[i + 1];
    mu_j.resize(e - b);
    for (long q = b; q < e; ++q) mu_j[q - b] = types[nl.index[q]];
}

int widest_projection(const AtomEvaluator& ev, ProjectionMode mode) {
    int width = 0;
    for (int mu = 0; mu < ev.potential().nelements(); ++mu) width = std::max(width, ev.projection_width(mu, mode));
    return width;
}

}  // namespace

StructureResult evaluate_structure(AtomEvaluator& ev, int n, const double* positions, const double* cell,
                                   const bool* pbc, const int* types, bool need_forces, ProjectionMode mode) {
    const Potential& p = ev.potential();
    check_types(p, n, types);
    NeighborList nl = build_neighbor_list(n, positions, cell, pbc, p.cutoff_max());
    StructureResult res = empty_result(n, need_forces);
    if (mode != ProjectionMode::None) {
        res.projection_width = widest_projection(ev, mode);
        res.projections.assign(size_t(n) * res.projection_width, 0.0);
    }
    AtomResult ar;
    std::vector<int> mu_j;
    for (int i = 0; i < n; ++i) {
        neighbour_types(nl, types, i, mu_j);
        double* row = mode == ProjectionMode::None ? nullptr : res.projections.data() + size_t(i) * res.projection_width;
        naming_atom(nl, i, [&] {
            ev.compute(types[i], int(mu_j.size()), mu_j.data(), nl.dvec.data() + 3 * nl.offsets[i], need_forces, mode,
                       ar, row);
        });
        accumulate(res, i, ar, nl, need_forces);
    }
    return res;
}

std::vector<double> structure_projections(AtomEvaluator& ev, int n, const double* positions, const double* cell,
                                          const bool* pbc, const int* types, ProjectionMode mode,
                                          const std::vector<int>& atoms, int& width) {
    if (mode == ProjectionMode::None) throw std::invalid_argument("structure_projections: no projection mode given");
    const Potential& p = ev.potential();
    check_types(p, n, types);
    for (int i : atoms)
        if (i < 0 || i >= n)
            throw std::invalid_argument("structure_projections: atom index " + std::to_string(i) + " outside 0.." +
                                        std::to_string(n - 1));
    NeighborList nl = build_neighbor_list(n, positions, cell, pbc, p.cutoff_max());
    width = widest_projection(ev, mode);
    std::vector<double> out(atoms.size() * size_t(width), 0.0);
    AtomResult ar;
    std::vector<int> mu_j;
    for (size_t k = 0; k < atoms.size(); ++k) {
        const int i = atoms[k];
        neighbour_types(nl, types, i, mu_j);
        naming_atom(nl, i, [&] {
            ev.compute(types[i], int(mu_j.size()), mu_j.data(), nl.dvec.data() + 3 * nl.offsets[i], false, mode, ar,
                       out.data() + k * width);
        });
    }
    return out;
}

std::vector<StructureResult> evaluate_structure_members(AtomEvaluator& ev, int n, const double* positions,
                                                        const double* cell, const bool* pbc, const int* types,
                                                        bool need_forces,
                                                        const std::vector<std::vector<std::vector<double>>>& members) {
    const Potential& p = ev.potential();
    check_types(p, n, types);
    for (size_t k = 0; k < members.size(); ++k) {
        if (int(members[k].size()) != p.nelements())
            throw std::invalid_argument("member " + std::to_string(k) + ": need coefficients for every element");
        for (int mu = 0; mu < p.nelements(); ++mu)
            if (int(members[k][mu].size()) != p.n_functions(mu) * p.embedding(mu).ndensity)
                throw std::invalid_argument("member " + std::to_string(k) + ", element " + p.elements()[mu] +
                                            ": expected " + std::to_string(p.n_functions(mu) * p.embedding(mu).ndensity) +
                                            " coefficients");
    }
    NeighborList nl = build_neighbor_list(n, positions, cell, pbc, p.cutoff_max());
    std::vector<StructureResult> res(members.size(), empty_result(n, need_forces));
    std::vector<AtomResult> ar;
    std::vector<int> mu_j;
    std::vector<const double*> coeffs(members.size());
    for (int i = 0; i < n; ++i) {
        neighbour_types(nl, types, i, mu_j);
        for (size_t k = 0; k < members.size(); ++k) coeffs[k] = members[k][types[i]].data();
        naming_atom(nl, i, [&] {
            ev.compute_members(types[i], int(mu_j.size()), mu_j.data(), nl.dvec.data() + 3 * nl.offsets[i],
                               need_forces, coeffs, ar);
        });
        for (size_t k = 0; k < members.size(); ++k) accumulate(res[k], i, ar[k], nl, need_forces);
    }
    return res;
}

}  // namespace aceuq
