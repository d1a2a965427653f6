// Radial functions of ACE, reproducing the reference implementation (pyace / ML-PACE) to rounding.
//
// Energies only agree to ~1e-14 with the reference if we evaluate the same floating-point
// expressions in the same order and, above all, look values up in the same cubic Hermite
// tables. So expression order below is deliberate: do not "simplify" it.
#include "aceuq/radial.hpp"

#include "text.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <tuple>

namespace aceuq {

namespace {

constexpr double kPi = 3.14159265358979323846264338327950288419;

// Conversion of e^2/(4 pi eps0) per Angstrom to eV, as the reference's ZBL uses it.
constexpr double kCoulomb = 14.399645351950543;

// Universal ZBL screening function (LAMMPS pair_style zbl coefficients).
constexpr double kZblCoef[4] = {0.18175, 0.50986, 0.28022, 0.02817};
constexpr double kZblExp[4] = {-3.19980, -0.94229, -0.40290, -0.20162};

RadialBase parse_radbase(const std::string& name) {
    if (name == "ChebExpCos") return RadialBase::ChebExpCos;
    if (name == "ChebPow") return RadialBase::ChebPow;
    if (name == "ChebLinear") return RadialBase::ChebLinear;
    if (name == "SBessel" || name == "TEST_SBessel") return RadialBase::SBessel;
    // The reference treats any other "TEST_" name as an identically zero basis.
    if (name.rfind("TEST_", 0) == 0) return RadialBase::Zero;
    throw std::invalid_argument("unknown radial basis function (radbase) '" + name +
                                "'; expected ChebExpCos, ChebPow, ChebLinear or SBessel");
}

InnerCutoff parse_inner_cutoff(const std::string& name) {
    if (name == "density") return InnerCutoff::Density;
    if (name == "distance") return InnerCutoff::Distance;
    if (name == "zbl") return InnerCutoff::Zbl;
    throw std::invalid_argument("unknown inner_cutoff_type '" + name +
                                "'; expected density, distance or zbl");
}

// Chebyshev polynomials T_0..T_n at x and dT_m/dx = m U_{m-1}(x).
void chebyshev(int n, double x, std::vector<double>& t, std::vector<double>& dt) {
    std::vector<double> u(n + 1);
    t.assign(n + 1, 0.0);
    dt.assign(n + 1, 0.0);
    double twox = 2.0 * x;
    t[0] = 1.;
    u[0] = 1.;
    if (n >= 1) {
        t[1] = x;
        u[1] = twox;
    }
    for (int m = 1; m <= n - 1; m++) {
        t[m + 1] = twox * t[m] - t[m - 1];
        u[m + 1] = twox * u[m] - u[m - 1];
    }
    for (int m = 1; m <= n; m++) dt[m] = m * u[m - 1];
}

double sinc(double x) { return x != 0.0 ? std::sin(x) / x : 1; }
double dsinc(double x) { return x != 0.0 ? (std::cos(x) * x - std::sin(x)) / (x * x) : 0; }

// Normalization of the n-th simplified spherical Bessel function (Kocer et al.), before the
// Gram-Schmidt-like recursion that makes them orthogonal.
double sbessel_prefactor(double rc, int n) {
    return std::pow(-1, n) * std::sqrt(2) * kPi / std::pow(rc, 1.5) * (n + 1) * (n + 2) /
           std::sqrt((n + 1) * (n + 1) + (n + 2) * (n + 2));
}

double sbessel_aux(double x, double rc, int n) {
    return sbessel_prefactor(rc, n) * (sinc(x * (n + 1) * kPi / rc) + sinc(x * (n + 2) * kPi / rc));
}

double dsbessel_aux(double x, double rc, int n) {
    return sbessel_prefactor(rc, n) * (dsinc(x * (n + 1) * kPi / rc) * (n + 1) * kPi / rc +
                                       dsinc(x * (n + 2) * kPi / rc) * (n + 2) * kPi / rc);
}

// Screened Coulomb energy phi(r/a)/r and its first two derivatives in r.
std::tuple<double, double, double> zbl_pair(double r, double a) {
    double x = r / a;
    double phi = 0, dphi = 0, d2phi = 0;
    for (int k = 0; k < 4; k++) {
        double t = kZblCoef[k] * std::exp(kZblExp[k] * x);
        phi += t;
        t *= kZblExp[k];
        dphi += t;
        t *= kZblExp[k];
        d2phi += t;
    }
    double e = 1 / r * phi;
    double de = (-1 / (r * r)) * phi + 1 / r * dphi / a;
    double d2e = (2 / (r * r * r)) * phi + 2 * (-1 / (r * r)) * dphi / a + (1 / r) * d2phi / (a * a);
    return {e, de, d2e};
}

}  // namespace

// Smooth step falling from 1 at r_in - delta_in to 0 at r_in (quintic in the scaled coordinate).
void poly_cutoff(double r, double r_in, double delta_in, double& fc, double& dfc) {
    if (r <= r_in - delta_in) {
        fc = 1;
        dfc = 0;
    } else if (r >= r_in) {
        fc = 0;
        dfc = 0;
    } else {
        // x = 1 - 2 (1 + (r - r_in) / delta_in), running from 1 to -1 across the window;
        // fc = 1/2 + 15/8 (x - 2x^3/3 + x^5/5). Terms grouped as the reference binary computes
        // them, so the spline nodes agree bit for bit.
        double x = ((r_in - r) / delta_in - 1.0) * 2.0 + 1.0;
        double x2 = x * x;
        double x4 = x2 * x2;
        fc = ((0.05 * x4 + 0.25) * x - (x * (1.0 / 6.0)) * x2) * 3.75 + 0.5;
        dfc = ((x4 * 0.25 - x2 * 0.5) + 0.25) * (-7.5 / delta_in);
    }
}


RadialTable::RadialTable(const BondSpec& spec, double delta_spline_bins, int nradbase, int nradmax,
                         int lmax)
    : rcut_(spec.rcut), nradbase_(nradbase), nradmax_(nradmax), lmax_(lmax), spec_(spec) {
    base_ = parse_radbase(spec.radbase);
    inner_ = parse_inner_cutoff(spec.inner_cutoff_type);
    // The reference reads NameOfCutoffFunctionij but always applies the cosine envelope; accept
    // only what it effectively implements so that a different request does not pass silently.
    if (!spec.cutoff_function.empty() && spec.cutoff_function != "cos")
        throw std::invalid_argument("unknown cutoff function (NameOfCutoffFunctionij) '" +
                                    spec.cutoff_function + "'; only 'cos' is supported");
    if (spec.nradbase > nradbase || spec.nradmax > nradmax || spec.lmax > lmax)
        throw std::invalid_argument("bond " + spec.radbase +
                                    ": nradbase/nradmax/lmax exceed the table's padded dimensions");
    if (spec.nradbase < 0 || spec.nradmax < 0 || spec.lmax < 0)
        throw std::invalid_argument("bond: negative nradbase/nradmax/lmax");
    std::size_t ncrad = std::size_t(spec.nradmax) * (spec.lmax + 1) * spec.nradbase;
    if (spec.crad.size() != ncrad)
        throw std::invalid_argument("bond: radcoefficients have " + std::to_string(spec.crad.size()) +
                                    " values, expected nradmax*(lmax+1)*nradbase = " +
                                    std::to_string(ncrad));
    if (!(spec.rcut > 0)) throw std::invalid_argument("bond: rcut must be positive");
    if (base_ == RadialBase::ChebExpCos || base_ == RadialBase::ChebPow ||
        base_ == RadialBase::ChebLinear) {
        if (spec.radparameters.empty())
            throw std::invalid_argument("bond: radbase " + spec.radbase +
                                        " needs radparameters [lambda]");
    }
    lambda_ = spec.radparameters.empty() ? 0.0 : spec.radparameters[0];
    if (inner_ == InnerCutoff::Zbl && (spec.z_i <= 0 || spec.z_j <= 0))
        throw std::invalid_argument("bond: inner_cutoff_type zbl needs atomic numbers z_i, z_j");
    if (!(delta_spline_bins > 0))
        throw std::invalid_argument("DeltaSplineBins must be positive");
    checked_size(rcut_, delta_spline_bins, nradbase_, nradmax_, lmax_);

    // Pad crad to the table's dimensions so the R_nl sum runs over the same k as the reference;
    // absent (n, l, k) stay zero, which makes padded R_nl exactly zero.
    crad_.assign(std::size_t(nradmax_) * (lmax_ + 1) * nradbase_, 0.0);
    for (int n = 0; n < spec.nradmax; n++)
        for (int l = 0; l <= spec.lmax; l++)
            for (int k = 0; k < spec.nradbase; k++)
                crad_[(std::size_t(n) * (lmax_ + 1) + l) * nradbase_ + k] =
                    spec.crad[(std::size_t(n) * (spec.lmax + 1) + l) * spec.nradbase + k];

    build_tables(delta_spline_bins);
}

void RadialTable::radial_base(double r, double* gr, double* dgr) const {
    const int nb = nradbase_;
    const double cut = spec_.rcut, dcut = spec_.dcut;
    double cut_in = spec_.r_in;
    const double dcut_in = spec_.delta_in;
    // With ZBL the ACE/ZBL switch happens in the energy, not in g_k; the reference replaces the
    // inner radius by the boolean (delta_in == 0), which disables the inner cutoff of g_k unless
    // delta_in is zero. Reproduced as is.
    if (inner_ == InnerCutoff::Zbl) cut_in = (dcut_in == 0) ? 1.0 : 0.0;

    for (int k = 0; k < nb; k++) gr[k] = dgr[k] = 0.0;
    if (r <= cut_in - dcut_in || r >= cut) return;

    std::vector<double> t, dt;
    switch (base_) {
        case RadialBase::ChebExpCos: {
            // x = 1 - 2 (exp(-lambda r/rc) - exp(-lambda)) / (1 - exp(-lambda)), times a cosine
            // envelope over [0, rc] and a cosine taper over [rc - dcut, rc] (the "cos" cutoff).
            // Written the way the reference binary evaluates it (its -Ofast build rewrote the
            // source's expressions), so that spline nodes agree bit for bit.
            const double lam = lambda_;
            const double inv_cut = 1.0 / cut;
            const double rc = r * inv_cut;
            const double y1 = std::exp(-lam * rc);
            const double y2 = std::exp(-lam);
            const double x = 2.0 * ((y1 - y2) / (y2 - 1.0)) + 1.0;
            const double dx = (inv_cut * (y1 / (1.0 - y2))) * (lam + lam);
            chebyshev(nb, x, t, dt);
            if (nb >= 1) {
                gr[0] = t[0];
                dgr[0] = dt[0] * dx;
            }
            const double mdx = dx * -0.5;
            for (int n = 1; n < nb; n++) {
                gr[n] = (1.0 - t[n]) * 0.5;
                dgr[n] = dt[n] * mdx;
            }
            const double env = (std::cos(rc * kPi) + 1.0) * 0.5;
            const double denv = (inv_cut * (-0.5 * kPi)) * std::sin(rc * kPi);
            for (int n = 0; n < nb; n++) {
                dgr[n] = dgr[n] * env + gr[n] * denv;
                gr[n] = gr[n] * env;
            }
            if (r > cut - dcut) {
                const double arg = (((r - cut) + dcut) * kPi) / dcut;
                const double fcut = (std::cos(arg) + 1.0) * 0.5;
                const double dfcut = ((-0.5 * kPi) * std::sin(arg)) / dcut;
                for (int n = 0; n < nb; n++) {
                    dgr[n] = dgr[n] * fcut + gr[n] * dfcut;
                    gr[n] = gr[n] * fcut;
                }
            }
            break;
        }
        case RadialBase::ChebPow: {
            // x = 2(1 - (1 - r/rc)^lambda) - 1: g_k and its lambda-1 derivatives vanish at rc, so
            // no separate cutoff function is applied.
            double lam = lambda_;
            double y = (1.0 - r / cut);
            double dy = std::pow(y, (lam - 1.0));
            y = dy * y;
            dy = -lam / cut * dy;
            double x = 2.0 * (1.0 - y) - 1.0;
            double dx = -2.0 * dy;
            chebyshev(nb, x, t, dt);
            for (int n = 1; n <= nb; n++) {
                gr[n - 1] = 0.5 - 0.5 * t[n];
                dgr[n - 1] = -0.5 * dt[n] * dx;
            }
            break;
        }
        case RadialBase::ChebLinear: {
            double x = (1.0 - r / cut);
            double dx = -1 / cut;
            chebyshev(nb, x, t, dt);
            for (int n = 1; n <= nb; n++) {
                gr[n - 1] = 0.5 - 0.5 * t[n];
                dgr[n - 1] = -0.5 * dt[n] * dx;
            }
            break;
        }
        case RadialBase::SBessel: {
            if (r < cut && nb >= 1) {
                gr[0] = sbessel_aux(r, cut, 0);
                dgr[0] = dsbessel_aux(r, cut, 0);
                double d_prev = 1.0;
                for (int n = 1; n < nb; n++) {
                    // integer product first, as the reference computes it
                    double en = (n * n) * ((n + 2) * (n + 2)) / (4 * std::pow(n + 1, 4) + 1);
                    double dn = 1 - en / d_prev;
                    gr[n] = 1 / std::sqrt(dn) * (sbessel_aux(r, cut, n) + std::sqrt(en / d_prev) * gr[n - 1]);
                    dgr[n] = 1 / std::sqrt(dn) * (dsbessel_aux(r, cut, n) + std::sqrt(en / d_prev) * dgr[n - 1]);
                    d_prev = dn;
                }
            }
            break;
        }
        case RadialBase::Zero:
            break;
    }

    if (inner_ == InnerCutoff::Distance || inner_ == InnerCutoff::Zbl) {
        // g_k rise smoothly from zero at r_in - delta_in to full at r_in.
        double fc, dfc;
        poly_cutoff(r, cut_in, dcut_in, fc, dfc);
        fc = 1 - fc;
        dfc = -dfc;
        for (int k = 0; k < nb; k++) {
            double g = gr[k] * fc;
            double dg = dgr[k] * fc + gr[k] * dfc;
            gr[k] = g;
            dgr[k] = dg;
        }
    }
}

void RadialTable::radial_functions(const double* gr, const double* dgr, double* fr,
                                   double* dfr) const {
    const int nl = lmax_ + 1;
    for (int n = 0; n < nradmax_; n++)
        for (int l = 0; l < nl; l++) {
            const double* c = &crad_[(std::size_t(n) * nl + l) * nradbase_];
            // The reference binary sums over k in two interleaved partial sums (its compiler's
            // 2-wide vectorization of this loop), adds them, then adds an odd last term. Summing
            // the same way keeps its R_nl bit for bit; a plain sequential sum differs in the last
            // bit at about half of the spline nodes.
            double f0 = 0.0, f1 = 0.0, df0 = 0.0, df1 = 0.0;
            int k = 0;
            for (; k + 1 < nradbase_; k += 2) {
                f0 += c[k] * gr[k];
                f1 += c[k + 1] * gr[k + 1];
                df0 += c[k] * dgr[k];
                df1 += c[k + 1] * dgr[k + 1];
            }
            double f = f0 + f1, df = df0 + df1;
            if (k < nradbase_) {
                f += c[k] * gr[k];
                df += c[k] * dgr[k];
            }
            fr[n * nl + l] = f;
            dfr[n * nl + l] = df;
        }
}

void RadialTable::core_repulsion(double r, double& cr, double& dcr) const {
    if (inner_ == InnerCutoff::Zbl) {
        // ZBL at full strength inside, switched off smoothly over [rcut - dcut, rcut]; the
        // transition between ACE and ZBL (r_in, delta_in) is done by the evaluator on the energy.
        const double out = spec_.rcut, in = spec_.rcut - spec_.dcut;
        const double pre = spec_.core_prefactor;
        const int zi = spec_.z_i, zj = spec_.z_j;
        if (r >= out) {
            cr = dcr = 0;
            return;
        }
        double a = 0.46850 / (std::pow(zi, 0.23) + std::pow(zj, 0.23));
        double e, de, d2e_unused;
        std::tie(e, de, d2e_unused) = zbl_pair(r, a);
        double ec, dec, d2ec;
        std::tie(ec, dec, d2ec) = zbl_pair(out, a);
        // Shift S(r) makes the energy, its first and second derivative vanish at the outer radius.
        double w = out - in;
        double A = (-3 * dec + w * d2ec) / (w * w);
        double B = (2 * dec - w * d2ec) / (w * w * w);
        double C = -ec + 1. / 2 * w * dec - 1. / 12 * (w * w) * d2ec;
        double s;
        if (r <= in)
            s = C;
        else
            s = A / 3 * std::pow(r - in, 3) + B / 4 * std::pow(r - in, 4) + C;
        cr = pre * kCoulomb / 2 * zi * zj * (e + s);
        double ds = 0;
        if (in < r) ds = A * std::pow(r - in, 2) + B * std::pow(r - in, 3);
        dcr = pre * kCoulomb / 2 * zi * zj * (de + ds);
        double fc, dfc;
        poly_cutoff(r, out, out - in, fc, dfc);
        double c = cr * fc;
        double dc = dcr * fc + cr * dfc;
        cr = c;
        dcr = dc;
        return;
    }

    // pre exp(-lambda r^2) / r, kept repulsive and decaying whatever the signs in the file.
    const double pre = std::fabs(spec_.core_prefactor);
    const double lambda = std::fabs(spec_.core_lambda);
    const double cutoff = spec_.rcut;
    double r2 = r * r;
    double lr2 = lambda * r2;
    if (lr2 < 50.0) {
        double y = std::exp(-lr2);
        cr = pre * y / r;
        dcr = -pre * y * (2.0 * lr2 + 1.0) / r2;
        double x0 = r / cutoff;
        double env = 0.5 * (1.0 + std::cos(kPi * x0));
        double denv = (-0.5 * kPi) * std::sin(kPi * x0) / cutoff;
        dcr = denv * cr + dcr * env;
        cr = cr * env;
    } else {
        cr = 0.0;
        dcr = 0.0;
    }
    if (inner_ == InnerCutoff::Distance) {
        // Repulsion acts only inside the inner cutoff, where the ACE part is switched off.
        double fc, dfc;
        poly_cutoff(r, spec_.r_in, spec_.delta_in, fc, dfc);
        double c = cr * fc;
        double dc = dcr * fc + cr * dfc;
        cr = c;
        dcr = dc;
    }
}

void RadialTable::exact_all(double r, double* gr, double* dgr, double* fr, double* dfr, double& cr,
                            double& dcr) const {
    radial_base(r, gr, dgr);
    radial_functions(gr, dgr, fr, dfr);
    core_repulsion(r, cr, dcr);
}

double RadialTable::checked_size(double rcut, double delta, int nradbase, int nradmax, int lmax) {
    // The grid is the reference's: nlut = trunc(rcut / delta) intervals on [0, rcut].
    const double nodes = std::floor(rcut / delta) + 1;
    const double nf = double(nradbase) + double(nradmax) * (double(lmax) + 1) + 1;
    const double bytes = 8 * (nodes * nf * 4 + double(nradmax) * (double(lmax) + 1) * double(nradbase));
    auto num = [](double x, int digits = 10) { return text::number(x, digits); };
    if (!(nodes >= 2))
        throw std::invalid_argument("DeltaSplineBins = " + num(delta) + " is larger than the cutoff rcutij = " +
                                    num(rcut) + ": the spline grid has no interval");
    if (!(bytes <= kMaxBytes))
        throw std::invalid_argument(
            "its radial spline table would take " + num(bytes / (1 << 30), 3) + " GiB, more than the limit of " +
            num(kMaxBytes / (1 << 30)) + " GiB: rcutij / DeltaSplineBins = " + num(rcut) + " / " + num(delta) +
            " gives " + num(nodes) + " grid nodes, each holding 4 coefficients for " + num(nf) +
            " functions (nradbaseij = " + std::to_string(nradbase) + ", nradmaxi = " + std::to_string(nradmax) +
            ", lmaxi = " + std::to_string(lmax) + ", the largest over all bonds); real potentials have rcutij " +
            "<= ~10, DeltaSplineBins ~0.001 and tables of a few MB");
    return bytes;
}

void RadialTable::build_tables(double delta) {
    // The grid is the reference's: nlut = trunc(rcut / delta) intervals on [0, rcut], so the
    // actual spacing is rcut / nlut, not delta. checked_size has bounded nlut far below INT_MAX.
    nlut_ = static_cast<int>(rcut_ / delta);
    rscale_ = double(nlut_) / rcut_;
    inv_rscale_ = 1.0 / rscale_;

    const int nf = nfunc();
    const int nfr = nradmax_ * (lmax_ + 1);
    table_.assign(std::size_t(nlut_ + 1) * nf * 4, 0.0);

    std::vector<double> v(nf), dv(nf);
    // Value and scaled slope at the node to the right; beyond the last node everything is zero.
    std::vector<double> f1(nf, 0.0), f1d1(nf, 0.0);
    for (int n = nlut_; n >= 1; n--) {
        double r = inv_rscale_ * double(n);
        exact_all(r, v.data(), dv.data(), v.data() + nradbase_, dv.data() + nradbase_,
                  v[nradbase_ + nfr], dv[nradbase_ + nfr]);
        double* row = &table_[std::size_t(n) * nf * 4];
        for (int f = 0; f < nf; f++) {
            double f0 = v[f];
            double f0d1 = dv[f] * inv_rscale_;
            double* c = row + 4 * f;
            // Hermite cubic on [n, n+1] in units of grid steps. Bracketing as the reference
            // binary (built with -Ofast) actually evaluates it, not as its source reads.
            c[0] = f0;
            c[1] = f0d1;
            c[2] = 3.0 * (f1[f] - f0) - f1d1[f] - 2.0 * f0d1;
            c[3] = -2.0 * (f1[f] - f0) + (f1d1[f] + f0d1);
            f1[f] = c[0];
            f1d1[f] = c[1];
        }
    }
}

void RadialTable::resize(RadialValues& out) const {
    const std::size_t nfr = std::size_t(nradmax_) * (lmax_ + 1);
    if (out.gr.size() != std::size_t(nradbase_)) {
        out.gr.resize(nradbase_);
        out.dgr.resize(nradbase_);
    }
    if (out.fr.size() != nfr) {
        out.fr.resize(nfr);
        out.dfr.resize(nfr);
    }
}

void RadialTable::evaluate(double r, RadialValues& out) const {
    resize(out);
    double x = r * rscale_;
    // Same failure as the reference for distances inside the first grid interval.
    if (!(x >= 1.0))
        throw std::invalid_argument("radial lookup: distance " + std::to_string(r) +
                                    " is below the first spline node, at " + std::to_string(1.0 / rscale_) +
                                    " (atoms too close" +
                                    (1.0 / rscale_ > 0.5 ? std::string(", or the potential's DeltaSplineBins is too coarse)")
                                                         : std::string(")")));
    if (x >= double(nlut_)) {
        std::fill(out.gr.begin(), out.gr.end(), 0.0);
        std::fill(out.dgr.begin(), out.dgr.end(), 0.0);
        std::fill(out.fr.begin(), out.fr.end(), 0.0);
        std::fill(out.dfr.begin(), out.dfr.end(), 0.0);
        out.cr = out.dcr = 0.0;
        return;
    }
    const int nl = static_cast<int>(std::floor(x));
    const double wl = x - double(nl);
    const double wl2 = wl * wl;
    const double wl3 = wl2 * wl;
    const double w2l1 = 2.0 * wl;
    const double w3l2 = 3.0 * wl2;
    const int nf = nfunc();
    const double* row = &table_[std::size_t(nl) * nf * 4];
    // Bracketing as the reference binary evaluates the cubic (its -Ofast build reassociates);
    // the textbook order differs in the last bit for about a quarter of the lookups.
    auto lookup = [&](int f, double& val, double& der) {
        const double* c = row + 4 * f;
        val = (c[0] + c[3] * wl3) + (c[1] * wl + c[2] * wl2);
        der = ((c[2] * w2l1 + c[3] * w3l2) + c[1]) * rscale_;
    };
    int f = 0;
    for (int k = 0; k < nradbase_; k++, f++) lookup(f, out.gr[k], out.dgr[k]);
    const int nfr = nradmax_ * (lmax_ + 1);
    for (int i = 0; i < nfr; i++, f++) lookup(f, out.fr[i], out.dfr[i]);
    lookup(f, out.cr, out.dcr);
}

void RadialTable::evaluate_exact(double r, RadialValues& out) const {
    resize(out);
    // Everything vanishes beyond the cutoff (the core repulsion's cosine envelope alone would
    // rise again there); the tables are built without this guard, like the reference's.
    if (r >= rcut_) {
        std::fill(out.gr.begin(), out.gr.end(), 0.0);
        std::fill(out.dgr.begin(), out.dgr.end(), 0.0);
        std::fill(out.fr.begin(), out.fr.end(), 0.0);
        std::fill(out.dfr.begin(), out.dfr.end(), 0.0);
        out.cr = out.dcr = 0.0;
        return;
    }
    exact_all(r, out.gr.data(), out.dgr.data(), out.fr.data(), out.dfr.data(), out.cr, out.dcr);
}

}  // namespace aceuq
