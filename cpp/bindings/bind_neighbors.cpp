// Python binding of the cell-list neighbour search: aceuq._core.neighbor_list.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "aceuq/neighbors.hpp"

namespace py = pybind11;

namespace {

// Hand a std::vector over to numpy without copying (the array owns the vector).
template <class T>
py::array_t<T> vector_to_array(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
    auto* heap = new std::vector<T>(std::move(v));
    py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>(std::move(shape), heap->data(), owner);
}

py::dict neighbor_list_py(py::object positions_obj, py::object cell_obj, py::object pbc_obj,
                          double cutoff) {
    using farr = py::array_t<double, py::array::c_style | py::array::forcecast>;
    farr positions = farr::ensure(positions_obj);
    if (!positions) throw std::invalid_argument("neighbor_list: positions must be a float array");
    if (positions.ndim() != 2 || positions.shape(1) != 3)
        throw std::invalid_argument("neighbor_list: positions must have shape (N, 3)");
    const py::ssize_t n = positions.shape(0);
    if (n > 2147483647) throw std::invalid_argument("neighbor_list: too many atoms");

    double cell[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (!cell_obj.is_none()) {
        farr c = farr::ensure(cell_obj);
        if (!c) throw std::invalid_argument("neighbor_list: cell must be a float array");
        if (c.ndim() == 2 && c.shape(0) == 3 && c.shape(1) == 3) {
            for (int k = 0; k < 9; ++k) cell[k] = c.data()[k];
        } else if (c.ndim() == 1 && c.shape(0) == 3) {  // orthorhombic lengths
            for (int k = 0; k < 3; ++k) cell[4 * k] = c.data()[k];
        } else {
            throw std::invalid_argument("neighbor_list: cell must have shape (3, 3) or (3,)");
        }
    }

    bool pbc[3] = {false, false, false};
    if (py::isinstance<py::bool_>(pbc_obj)) {
        pbc[0] = pbc[1] = pbc[2] = pbc_obj.cast<bool>();
    } else {
        using barr = py::array_t<bool, py::array::c_style | py::array::forcecast>;
        barr p = barr::ensure(pbc_obj);
        if (!p || (p.size() != 3 && p.size() != 1))
            throw std::invalid_argument("neighbor_list: pbc must be a bool or 3 bools");
        for (int k = 0; k < 3; ++k) pbc[k] = p.data()[p.size() == 1 ? 0 : k];
    }

    aceuq::NeighborList nl;
    {
        py::gil_scoped_release release;
        nl = aceuq::build_neighbor_list(static_cast<int>(n), positions.data(), cell, pbc, cutoff);
    }
    const py::ssize_t m = static_cast<py::ssize_t>(nl.index.size());
    py::dict out;
    out["offsets"] = vector_to_array(std::move(nl.offsets), {n + 1});
    out["index"] = vector_to_array(std::move(nl.index), {m});
    out["dvec"] = vector_to_array(std::move(nl.dvec), {m, py::ssize_t(3)});
    out["dist"] = vector_to_array(std::move(nl.dist), {m});
    return out;
}

}  // namespace

void bind_neighbors(py::module_& m) {
    m.def("neighbor_list", &neighbor_list_py, py::arg("positions"), py::arg("cell"),
          py::arg("pbc"), py::arg("cutoff"),
          R"doc(Full neighbour list with cell lists (O(N)).

Parameters
----------
positions : (N, 3) float array, Cartesian, need not be wrapped into the cell.
cell : (3, 3) float array, rows are lattice vectors (ASE convention); (3,) lengths of an
    orthorhombic cell; or None (all zeros). Non-periodic rows may be zero.
pbc : bool or 3 bools.
cutoff : float > 0; pairs with distance strictly below it are returned.

Returns
-------
dict with
  offsets : (N+1,) int64, neighbours of atom i are entries offsets[i]:offsets[i+1]
  index   : (M,) int32, neighbour atom j (periodic images fold back to j)
  dvec    : (M, 3) float64, r_j + S @ cell - r_i for an integer lattice
            translation S (input positions as given, not wrapped)
  dist    : (M,) float64, |dvec|

Every pair appears once per direction and once per periodic image; an atom is never its own
neighbour at zero shift. Order within an atom's block is deterministic but not sorted.
Raises ValueError on non-finite positions, non-positive cutoff or a singular periodic cell.)doc");
}
