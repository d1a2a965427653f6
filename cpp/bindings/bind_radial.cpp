// Test-facing access to the radial tables: lets pytest compare g_k, R_nl and the core repulsion
// with the reference directly, before any energy is involved.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "aceuq/radial.hpp"

namespace py = pybind11;

namespace {

// The bond dict uses the potential file's key names (one species block's bond part), plus z_i
// and z_j for ZBL, so a test can pass a block of a saved potential as it is.
aceuq::BondSpec bond_from_dict(const py::dict& d) {
    auto get = [&](const char* key) -> py::object {
        if (!d.contains(key)) throw std::invalid_argument(std::string("bond dict lacks key '") + key + "'");
        return d[key];
    };
    aceuq::BondSpec s;
    s.radbase = get("radbase").cast<std::string>();
    s.radparameters = get("radparameters").cast<std::vector<double>>();
    s.nradmax = get("nradmaxi").cast<int>();
    s.lmax = get("lmaxi").cast<int>();
    s.nradbase = get("nradbaseij").cast<int>();
    // nested [n][l][k] or flat: numpy flattens either in row-major order
    auto crad = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(get("radcoefficients"));
    if (!crad) throw std::invalid_argument("radcoefficients is not a numeric array");
    s.crad.assign(crad.data(), crad.data() + crad.size());
    s.rcut = get("rcutij").cast<double>();
    s.dcut = get("dcutij").cast<double>();
    if (d.contains("NameOfCutoffFunctionij")) s.cutoff_function = d["NameOfCutoffFunctionij"].cast<std::string>();
    if (d.contains("r_in")) s.r_in = d["r_in"].cast<double>();
    if (d.contains("delta_in")) s.delta_in = d["delta_in"].cast<double>();
    if (d.contains("inner_cutoff_type")) s.inner_cutoff_type = d["inner_cutoff_type"].cast<std::string>();
    if (d.contains("core-repulsion")) {
        auto cr = d["core-repulsion"].cast<std::vector<double>>();
        if (cr.size() != 2) throw std::invalid_argument("core-repulsion must be [prefactor, lambda]");
        s.core_prefactor = cr[0];
        s.core_lambda = cr[1];
    }
    if (d.contains("z_i")) s.z_i = d["z_i"].cast<int>();
    if (d.contains("z_j")) s.z_j = d["z_j"].cast<int>();
    return s;
}

py::dict radial_values(const py::dict& spec, double delta_spline_bins, int nradbase, int nradmax,
                       int lmax, py::array_t<double, py::array::c_style | py::array::forcecast> r,
                       bool exact) {
    aceuq::RadialTable table(bond_from_dict(spec), delta_spline_bins, nradbase, nradmax, lmax);
    const py::ssize_t nr = r.size();
    const py::ssize_t nl = lmax + 1;
    py::array_t<double> gr({nr, py::ssize_t(nradbase)}), dgr({nr, py::ssize_t(nradbase)});
    py::array_t<double> fr({nr, py::ssize_t(nradmax), nl}), dfr({nr, py::ssize_t(nradmax), nl});
    py::array_t<double> cr(nr), dcr(nr);
    auto g = gr.mutable_unchecked<2>(), dg = dgr.mutable_unchecked<2>();
    auto f = fr.mutable_unchecked<3>(), df = dfr.mutable_unchecked<3>();
    auto c = cr.mutable_unchecked<1>(), dc = dcr.mutable_unchecked<1>();
    const double* rp = r.data();
    aceuq::RadialValues v;
    for (py::ssize_t i = 0; i < nr; i++) {
        if (exact)
            table.evaluate_exact(rp[i], v);
        else
            table.evaluate(rp[i], v);
        for (int k = 0; k < nradbase; k++) {
            g(i, k) = v.gr[k];
            dg(i, k) = v.dgr[k];
        }
        for (int n = 0; n < nradmax; n++)
            for (py::ssize_t l = 0; l < nl; l++) {
                f(i, n, l) = v.fr[n * nl + l];
                df(i, n, l) = v.dfr[n * nl + l];
            }
        c(i) = v.cr;
        dc(i) = v.dcr;
    }
    py::dict out;
    out["gr"] = gr;
    out["dgr"] = dgr;
    out["fr"] = fr;
    out["dfr"] = dfr;
    out["cr"] = cr;
    out["dcr"] = dcr;
    return out;
}

}  // namespace

void bind_radial(py::module_& m) {
    m.def("radial_values", &radial_values, py::arg("spec"), py::arg("delta_spline_bins"),
          py::arg("nradbase"), py::arg("nradmax"), py::arg("lmax"), py::arg("r"),
          py::arg("exact") = false,
          R"doc(Radial functions of one bond at distances r.

spec: the bond's keys as in a potential file block (radbase, radparameters, radcoefficients,
nradmaxi, lmaxi, nradbaseij, rcutij, dcutij, NameOfCutoffFunctionij, r_in, delta_in,
inner_cutoff_type, core-repulsion) plus z_i, z_j (atomic numbers, needed for zbl).
nradbase, nradmax, lmax: padded sizes (maxima over the potential's bonds).
exact: evaluate the functions directly instead of through the spline tables.
Returns a dict of arrays gr, dgr [len(r), nradbase], fr, dfr [len(r), nradmax, lmax+1], cr, dcr [len(r)].)doc");
}
