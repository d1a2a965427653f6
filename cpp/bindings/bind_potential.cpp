// Potential and evaluation of whole structures.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

#include "aceuq/evaluator.hpp"
#include "aceuq/potential.hpp"

namespace py = pybind11;
using namespace aceuq;

namespace {

ProjectionMode parse_mode(const std::string& s) {
    if (s == "none") return ProjectionMode::None;
    if (s == "linear") return ProjectionMode::Linear;
    if (s == "full") return ProjectionMode::Full;
    throw std::invalid_argument("projections must be 'none', 'linear' or 'full', got '" + s + "'");
}

using CArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

// Checks the structure arrays shared by the evaluate calls; returns the number of atoms.
int check_structure(const CArray& positions, const CArray& cell, const std::vector<bool>& pbc,
                    const py::array_t<int, py::array::c_style | py::array::forcecast>& types, bool pb[3]) {
    const int n = int(types.size());
    if (positions.ndim() != 2 || positions.shape(0) != n || positions.shape(1) != 3)
        throw std::invalid_argument("positions must have shape (n_atoms, 3)");
    if (cell.size() != 9) throw std::invalid_argument("cell must be 3x3");
    if (pbc.size() != 3) throw std::invalid_argument("pbc must have 3 entries");
    for (int c = 0; c < 3; ++c) pb[c] = pbc[c];
    return n;
}

template <class T>
py::array_t<T> to_array(const std::vector<T>& v, std::vector<py::ssize_t> shape) {
    py::array_t<T> a(shape);
    if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
    return a;
}

}  // namespace

void bind_potential(py::module_& m) {
    // Error messages quote the user's files (entry names, element names, YAML values), which need
    // not be UTF-8; pybind11's own translation would then raise UnicodeDecodeError instead of the
    // error. So every C++ error the core throws is translated here, with undecodable bytes
    // escaped (backslashreplace), into the exception type pybind11 would have used.
    static py::handle input_error = py::exception<InputError>(m, "InputError", PyExc_ValueError).release();
    py::register_exception_translator([](std::exception_ptr p) {
        auto set = [](PyObject* type, const std::exception& e) {
            const char* what = e.what();
            PyObject* msg = PyUnicode_DecodeUTF8(what, Py_ssize_t(std::strlen(what)), "backslashreplace");
            if (!msg) return;  // (only on out-of-memory; the decoder's error is then pending)
            PyErr_SetObject(type, msg);
            Py_DECREF(msg);
        };
        try {
            std::rethrow_exception(p);
        } catch (const py::builtin_exception&) {
            throw;  // pybind11's own exception types: its translator sets them
        } catch (const InputError& e) {
            set(input_error.ptr(), e);
        } catch (const std::invalid_argument& e) {
            set(PyExc_ValueError, e);
        } catch (const std::domain_error& e) {
            set(PyExc_ValueError, e);
        } catch (const std::length_error& e) {
            set(PyExc_ValueError, e);
        } catch (const std::out_of_range& e) {
            set(PyExc_IndexError, e);
        } catch (const std::range_error& e) {
            set(PyExc_ValueError, e);
        } catch (const std::overflow_error& e) {
            set(PyExc_OverflowError, e);
        } catch (const std::runtime_error& e) {
            set(PyExc_RuntimeError, e);
        }
    });

    py::class_<Potential, std::shared_ptr<Potential>>(m, "Potential")
        .def(py::init([](const std::string& path) { return Potential::load(path); }), py::arg("path"))
        .def_property_readonly("path", &Potential::path)
        .def_property_readonly("elements", &Potential::elements)
        .def_property_readonly("cutoff", &Potential::cutoff_max)
        .def_property_readonly("lmax", &Potential::lmax)
        .def_property_readonly("nradmax", &Potential::nradmax)
        .def_property_readonly("nradbase", &Potential::nradbase)
        .def_property_readonly("rankmax", &Potential::rankmax)
        .def("element_index", &Potential::element_index)
        .def("ndensity", [](const Potential& p, int mu) { return p.embedding(mu).ndensity; })
        .def("n_functions", &Potential::n_functions)
        .def("n_projections", &Potential::n_projections, py::arg("mu"), py::arg("full"))
        .def("coefficients", [](const Potential& p, int mu) {
            auto c = p.coefficients(mu);
            return to_array(c, {py::ssize_t(p.n_functions(mu)), py::ssize_t(p.embedding(mu).ndensity)});
        })
        .def("set_coefficients", [](Potential& p, int mu, py::array_t<double, py::array::c_style | py::array::forcecast> c) {
            p.set_coefficients(mu, std::vector<double>(c.data(), c.data() + c.size()));
        })
        .def("functions", [](const Potential& p, int mu) {
            // (rank, mus, ns, ls, LS) per function in projection order
            py::list out;
            for (const auto* g : {&p.rank1(mu), &p.higher(mu)})
                for (const auto& f : *g) out.append(py::make_tuple(f.rank, f.mus, f.ns, f.ls, f.LS));
            return out;
        })
        .def_property_readonly("fingerprint", &Potential::basis_fingerprint)
        .def("fingerprint_with", &Potential::fingerprint, py::arg("coefficients"));

    py::class_<AtomEvaluator>(m, "Evaluator")
        .def(py::init<std::shared_ptr<const Potential>>(), py::arg("potential"))
        .def("evaluate",
             [](AtomEvaluator& ev, py::array_t<double, py::array::c_style | py::array::forcecast> positions,
                py::array_t<double, py::array::c_style | py::array::forcecast> cell, std::vector<bool> pbc,
                py::array_t<int, py::array::c_style | py::array::forcecast> types, bool forces,
                const std::string& projections) {
                 bool pb[3];
                 const int n = check_structure(positions, cell, pbc, types, pb);
                 const ProjectionMode mode = parse_mode(projections);
                 StructureResult r;
                 {
                     py::gil_scoped_release nogil;
                     r = evaluate_structure(ev, n, positions.data(), cell.data(), pb, types.data(), forces, mode);
                 }
                 py::dict d;
                 d["energy"] = r.energy;
                 d["energies"] = to_array(r.energies, {n});
                 if (forces) {
                     d["forces"] = to_array(r.forces, {n, 3});
                     d["virial"] = to_array(r.virial, {3, 3});
                 }
                 if (mode != ProjectionMode::None)
                     d["projections"] = to_array(r.projections, {n, r.projection_width});
                 return d;
             },
             py::arg("positions"), py::arg("cell"), py::arg("pbc"), py::arg("types"), py::arg("forces") = true,
             py::arg("projections") = "none")
        .def("projections",
             [](AtomEvaluator& ev, CArray positions, CArray cell, std::vector<bool> pbc,
                py::array_t<int, py::array::c_style | py::array::forcecast> types, const std::string& mode,
                std::vector<int> atoms) {
                 bool pb[3];
                 const int n = check_structure(positions, cell, pbc, types, pb);
                 const ProjectionMode pm = parse_mode(mode);
                 std::vector<double> rows;
                 int width = 0;
                 {
                     py::gil_scoped_release nogil;
                     rows = structure_projections(ev, n, positions.data(), cell.data(), pb, types.data(), pm, atoms,
                                                  width);
                 }
                 return to_array(rows, {py::ssize_t(atoms.size()), py::ssize_t(width)});
             },
             py::arg("positions"), py::arg("cell"), py::arg("pbc"), py::arg("types"), py::arg("mode"),
             py::arg("atoms"),
             "Projections of the listed atoms only (rows in that order), no energies or forces")
        .def("evaluate_members",
             [](AtomEvaluator& ev, py::array_t<double, py::array::c_style | py::array::forcecast> positions,
                py::array_t<double, py::array::c_style | py::array::forcecast> cell, std::vector<bool> pbc,
                py::array_t<int, py::array::c_style | py::array::forcecast> types,
                const std::vector<std::vector<std::vector<double>>>& members, bool forces) {
                 bool pb[3];
                 const int n = check_structure(positions, cell, pbc, types, pb);
                 std::vector<StructureResult> r;
                 {
                     py::gil_scoped_release nogil;
                     r = evaluate_structure_members(ev, n, positions.data(), cell.data(), pb, types.data(), forces,
                                                    members);
                 }
                 const py::ssize_t M = py::ssize_t(r.size());
                 py::array_t<double> energy({M}), energies({M, py::ssize_t(n)});
                 py::array_t<double> f({M, py::ssize_t(n), py::ssize_t(3)}), vir({M, py::ssize_t(3), py::ssize_t(3)});
                 for (py::ssize_t k = 0; k < M; ++k) {
                     energy.mutable_at(k) = r[k].energy;
                     if (n > 0)    // (an empty vector's data() may be null, which memcpy may not take)
                         std::memcpy(energies.mutable_data(k), r[k].energies.data(), n * sizeof(double));
                     if (forces) {
                         if (n > 0) std::memcpy(f.mutable_data(k), r[k].forces.data(), 3 * n * sizeof(double));
                         std::memcpy(vir.mutable_data(k), r[k].virial.data(), 9 * sizeof(double));
                     }
                 }
                 py::dict d;
                 d["energy"] = energy;
                 d["energies"] = energies;
                 if (forces) {
                     d["forces"] = f;
                     d["virial"] = vir;
                 }
                 return d;
             },
             py::arg("positions"), py::arg("cell"), py::arg("pbc"), py::arg("types"), py::arg("members"),
             py::arg("forces") = true);
}
