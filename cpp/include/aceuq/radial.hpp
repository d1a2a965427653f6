// Radial part of ACE: radial base functions g_k(r), radial functions R_nl(r) = sum_k c_nlk g_k(r),
// and the core repulsion, for one ordered pair of elements (a "bond").
#pragma once
#include <string>
#include <vector>

namespace aceuq {

// Parameters of one bond as the pacemaker potential file gives them.
struct BondSpec {
    std::string radbase;               // "ChebExpCos", "ChebPow", "ChebLinear", "SBessel", ...
    std::vector<double> radparameters; // e.g. {lambda}
    int nradmax = 0;                   // number of radial functions R_n (n = 0..nradmax-1)
    int lmax = 0;
    int nradbase = 0;                  // number of radial base functions g_k
    std::vector<double> crad;          // [nradmax][lmax+1][nradbase], row-major
    double rcut = 0, dcut = 0;
    std::string cutoff_function = "cos";  // NameOfCutoffFunctionij
    double r_in = 0, delta_in = 0;        // inner cutoff
    std::string inner_cutoff_type = "density";  // "density", "distance" or "zbl"
    double core_prefactor = 0, core_lambda = 0; // core-repulsion [prefactor, lambda]
    int z_i = 0, z_j = 0;                 // atomic numbers (ZBL)
};

enum class RadialBase { ChebExpCos, ChebPow, ChebLinear, SBessel, Zero };
enum class InnerCutoff { Density, Distance, Zbl };

// Smooth step falling from 1 at x <= x_in - delta to 0 at x >= x_in (the reference's quintic,
// used for inner cutoffs in distance and in core density); fc and dfc/dx.
void poly_cutoff(double x, double x_in, double delta, double& fc, double& dfc);

// Output of one evaluation; arrays are sized by the table's (padded) dimensions.
struct RadialValues {
    std::vector<double> gr, dgr;   // [nradbase]
    std::vector<double> fr, dfr;   // [nradmax * (lmax+1)], index n*(lmax+1)+l
    double cr = 0, dcr = 0;        // core repulsion and its derivative
};

// Tabulated radial functions of one bond. Values are looked up exactly as the reference
// implementation does (cubic Hermite splines on a grid of spacing delta_spline_bins over
// [0, rcut]), so energies agree to rounding; the exact functions are kept for the tests.
class RadialTable {
public:
    // nradbase/nradmax/lmax: padded dimensions (maxima over all bonds of the potential).
    // Padded R_nl (n >= spec.nradmax or l > spec.lmax) are zero. All nradbase g_k are computed
    // from the bond's radbase, also k >= spec.nradbase, because the reference does so (it only
    // matters in that the reference's rank-1 densities read them; their coefficients select).
    // Throws std::invalid_argument for an unknown radbase, cutoff function or inner cutoff type.
    RadialTable(const BondSpec& spec, double delta_spline_bins, int nradbase, int nradmax, int lmax);

    // Bytes a table of these dimensions holds (spline table and padded radcoefficients), worked
    // out in double so that absurd values cannot overflow. Throws std::invalid_argument, quoting
    // rcut, delta_spline_bins and the sizes, when the grid has no interval or the table would
    // exceed kMaxBytes. The constructor calls it before allocating anything.
    static double checked_size(double rcut, double delta_spline_bins, int nradbase, int nradmax, int lmax);
    // A table of a real potential (rcut <= ~10, DeltaSplineBins ~0.001, a few dozen functions)
    // takes 10-30 MB; the limit leaves a factor of 20 or more while refusing the GBs a few edited
    // numbers (rcutij 20000, DeltaSplineBins 1e-8, nradmaxi 1000) would ask for.
    static constexpr double kMaxBytes = 512.0 * 1024 * 1024;

    void evaluate(double r, RadialValues& out) const;         // spline lookup
    void evaluate_exact(double r, RadialValues& out) const;   // direct evaluation, no spline

    double cutoff() const { return rcut_; }
    int nradbase() const { return nradbase_; }
    int nradmax() const { return nradmax_; }
    int lmax() const { return lmax_; }

private:
    double rcut_;
    int nradbase_, nradmax_, lmax_;
    // implementation-defined members follow
    BondSpec spec_;
    RadialBase base_;
    InnerCutoff inner_;
    double lambda_ = 0;
    std::vector<double> crad_;      // padded [nradmax_][lmax_+1][nradbase_]
    // Hermite table: node n (1..nlut_) holds 4 coefficients per function, functions ordered
    // g_k, then R_nl, then core repulsion.
    int nlut_ = 0;
    double rscale_ = 1, inv_rscale_ = 1;
    std::vector<double> table_;     // [nlut_+1][nfunc()][4]

    int nfunc() const { return nradbase_ + nradmax_ * (lmax_ + 1) + 1; }
    void build_tables(double delta_spline_bins);
    void radial_base(double r, double* gr, double* dgr) const;
    void radial_functions(const double* gr, const double* dgr, double* fr, double* dfr) const;
    void core_repulsion(double r, double& cr, double& dcr) const;
    void exact_all(double r, double* gr, double* dgr, double* fr, double* dfr, double& cr,
                   double& dcr) const;
    void resize(RadialValues& out) const;
};

}  // namespace aceuq
