// aceuq._core: the compiled part of the aceuq Python package. One bind_<concern>.cpp per concern.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_potential(py::module_& m);
void bind_radial(py::module_& m);
void bind_angular(py::module_& m);
void bind_neighbors(py::module_& m);
void bind_grader(py::module_& m);

PYBIND11_MODULE(_core, m) {
    m.doc() = "aceuq compiled core: ACE potentials, evaluation, projections";
    bind_potential(m);
    bind_radial(m);
    bind_angular(m);
    bind_neighbors(m);
    bind_grader(m);
}
