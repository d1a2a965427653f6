// Python access to the angular basis: generalized Clebsch-Gordan couplings of B functions and
// spherical harmonics (mainly for tests against the reference and for inspection).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <complex>
#include <stdexcept>
#include <vector>

#include "aceuq/angular.hpp"

namespace py = pybind11;

void bind_angular(py::module_& m) {
    m.def(
        "b_function_couplings",
        [](const std::vector<int>& mus, const std::vector<int>& ns, const std::vector<int>& ls,
           const std::vector<int>& LS, bool reference_order) -> py::tuple {
            const aceuq::BCouplings c = aceuq::couple_b_function(mus, ns, ls, LS);
            const py::ssize_t num = c.num_ms_combs(), rank = c.rank;
            py::array_t<int> ms({num, rank});
            py::array_t<double> cg(num);
            auto msv = ms.mutable_unchecked<2>();
            auto cgv = cg.mutable_unchecked<1>();
            const bool permute = reference_order && !c.sort_order.empty();
            for (py::ssize_t i = 0; i < num; ++i) {
                for (py::ssize_t r = 0; r < rank; ++r)
                    msv(i, r) = c.ms[i * rank + (permute ? c.sort_order[r] : r)];
                cgv(i) = c.gen_cg[i];
            }
            if (!reference_order) return py::make_tuple(ms, cg);
            return py::make_tuple(ms, cg, c.sort_order);
        },
        py::arg("mus"), py::arg("ns"), py::arg("ls"), py::arg("LS"), py::arg("reference_order") = false,
        R"doc(Generalized Clebsch-Gordan couplings of one B basis function.

mus, ns (1-based), ls: neighbour element indices, radial and angular indices (length = rank 1..6);
LS: intermediate couplings ("lint" of the potential file; rank-2 entries, none for rank <= 2).
Returns (ms [num, rank] int, gen_cg [num] float) with
B = sum_c Re(gen_cg[c] * prod_t A(mus[t], ns[t], ls[t], ms[c, t])) in the reference's half-m basis.
Columns follow the given (mus, ns, ls) order. With reference_order=True the columns are permuted
as pyace stores them and the permutation sort_order is returned as a third item (pyace's
column r == given column sort_order[r]; empty list when pyace does not permute).)doc");

    m.def(
        "spherical_harmonics",
        [](int lmax, py::array_t<double, py::array::c_style | py::array::forcecast> unit_vectors) {
            if (unit_vectors.ndim() != 2 || unit_vectors.shape(1) != 3)
                throw std::invalid_argument("spherical_harmonics: unit_vectors must have shape [N, 3]");
            const py::ssize_t n = unit_vectors.shape(0);
            const py::ssize_t nlm = py::ssize_t(lmax + 1) * (lmax + 2) / 2;
            aceuq::SphericalHarmonics sh(lmax);
            py::array_t<std::complex<double>> ylm({n, nlm});
            py::array_t<std::complex<double>> dylm({n, nlm, py::ssize_t(3)});
            auto r = unit_vectors.unchecked<2>();
            auto y = ylm.mutable_unchecked<2>();
            auto dy = dylm.mutable_unchecked<3>();
            {
                py::gil_scoped_release release;
                for (py::ssize_t i = 0; i < n; ++i) {
                    sh.compute(r(i, 0), r(i, 1), r(i, 2));
                    for (int l = 0; l <= lmax; ++l)
                        for (int mm = 0; mm <= l; ++mm) {
                            const py::ssize_t k = py::ssize_t(l) * (l + 1) / 2 + mm;
                            y(i, k) = sh.ylm(l, mm);
                            const std::complex<double>* d = sh.dylm(l, mm);
                            for (int a = 0; a < 3; ++a) dy(i, k, a) = d[a];
                        }
                }
            }
            return py::make_tuple(ylm, dylm);
        },
        py::arg("lmax"), py::arg("unit_vectors"),
        R"doc(Complex Y_lm (Condon-Shortley phase, normalized so Y_00 = 1, i.e. sqrt(4 pi) times the
orthonormal ones) for l <= lmax, m = 0..l at index l(l+1)/2 + m, of unit vectors [N, 3] (not
normalized here), and dylm [N, nlm, 3]: the tangential gradient (I - r r^T) grad Y, equal to
|r| * dY(r/|r|)/dr at the unit vector.)doc");
}
