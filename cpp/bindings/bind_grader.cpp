// Extrapolation grade (Grader) and the .npz reader it uses.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "aceuq/grader.hpp"
#include "aceuq/npz.hpp"

namespace py = pybind11;
using namespace aceuq;

namespace {

py::array to_numpy(const NpyArray& a) {
    const py::dtype dt(a.dtype);
    const py::ssize_t item = dt.itemsize();
    std::vector<py::ssize_t> shape(a.shape.begin(), a.shape.end()), strides(shape.size());
    py::ssize_t st = item;
    if (a.fortran_order) {
        for (std::size_t d = 0; d < shape.size(); ++d) { strides[d] = st; st *= shape[d]; }
    } else {
        for (std::size_t d = shape.size(); d-- > 0;) { strides[d] = st; st *= shape[d]; }
    }
    return py::array(dt, shape, strides, a.data.data());  // no base object: numpy copies the bytes
}

int check_mu(const Grader& g, int mu) {
    if (!g.has_element(mu))
        throw py::index_error("no active set for element index " + std::to_string(mu) + " (0.." +
                              std::to_string(g.nelements() - 1) + ")");
    return mu;
}

}  // namespace

void bind_grader(py::module_& m) {
    m.def("grader_kernel", &grader_kernel,
          "The γ kernel in use: 'avx2+fma' or 'generic' (ACEUQ_GRADER_KERNEL=generic forces the latter)");
    m.attr("NPZ_MAX_ENTRY_BYTES") = kNpzMaxEntryBytes;
    m.attr("NPZ_MAX_TOTAL_BYTES") = kNpzMaxTotalBytes;
    m.def("read_npz", [](const std::string& path) {
            std::map<std::string, NpyArray> arrays;
            {
                py::gil_scoped_release nogil;
                arrays = read_npz(path);
            }
            py::dict out;
            for (const auto& kv : arrays) out[py::str(kv.first)] = to_numpy(kv.second);
            return out;
        },
        py::arg("path"), "Read a NumPy .npz (stored or deflated; object arrays refused) -> {name: array}.");

    py::class_<Grader, std::shared_ptr<Grader>>(m, "Grader",
        "Extrapolation grade gamma = max_j |(b^T A_inv)_j| against a pacemaker .asi or an aceuq .casi.")
        .def(py::init([](const std::string& path, std::shared_ptr<const Potential> pot) {
                 if (!pot) throw std::invalid_argument("potential must not be None");
                 return Grader::load(path, *pot);
             }),
             py::arg("path"), py::arg("potential"), py::keep_alive<1, 3>())
        .def_property_readonly("full", &Grader::full)
        .def_property_readonly("nelements", &Grader::nelements)
        .def_property(
            "assign", [](const Grader& g) { return std::string(g.assign() == Assign::Min ? "min" : "nearest"); },
            [](Grader& g, const std::string& a) {
                if (a == "nearest") g.set_assign(Assign::Nearest);
                else if (a == "min") g.set_assign(Assign::Min);
                else throw std::invalid_argument("assign must be 'nearest' or 'min', got '" + a + "'");
            })
        .def("has_element", &Grader::has_element, py::arg("mu"))
        .def("n_clusters", [](const Grader& g, int mu) { return g.element(check_mu(g, mu)).k; }, py::arg("mu"))
        .def("n_projections", [](const Grader& g, int mu) { return g.element(check_mu(g, mu)).n_proj; }, py::arg("mu"))
        .def("grade",
             [](const Grader& g, int mu, py::array_t<double, py::array::c_style | py::array::forcecast> proj) {
                 const int n_proj = g.element(check_mu(g, mu)).n_proj;
                 if (proj.ndim() != 2 || proj.shape(1) != n_proj)
                     throw std::invalid_argument("projections of element index " + std::to_string(mu) +
                                                 " must have shape (n, " + std::to_string(n_proj) + ")");
                 const py::ssize_t n = proj.shape(0);
                 py::array_t<double> gamma(n);
                 py::array_t<int> cluster(n);
                 {
                     py::gil_scoped_release nogil;
                     g.grade(mu, int(n), proj.data(), n_proj, gamma.mutable_data(), cluster.mutable_data());
                 }
                 return py::make_tuple(gamma, cluster);
             },
             py::arg("mu"), py::arg("projections"),
             "(n, n_projections) float64 projections of atoms of element mu -> (gamma (n,), cluster (n,) int32)");
}
