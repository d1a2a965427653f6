#include "aceuq/potential.hpp"

#include "text.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <set>
#include <sstream>

namespace aceuq {
namespace {

const char* const kSymbols[] = {
    "X",  "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si", "P",
    "S",  "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga",
    "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag",
    "Cd", "In", "Sn", "Sb", "Te", "I",  "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu",
    "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",  "Re", "Os", "Ir", "Pt", "Au",
    "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U",  "Np", "Pu", "Am",
    "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg",
    "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};

int atomic_number(const std::string& symbol) {
    for (int z = 1; z < int(sizeof(kSymbols) / sizeof(kSymbols[0])); ++z)
        if (symbol == kSymbols[z]) return z;
    return 0;  // pseudo-elements are allowed; only ZBL needs a real Z
}

std::vector<std::string> split_words(const std::string& s) {
    std::istringstream in(s);
    std::vector<std::string> out;
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

// The first field (its name in the file, and both values) in which two bonds differ; "" if none.
std::string bond_difference(const BondSpec& a, const BondSpec& b) {
    auto num = [](double x) { return text::number(x, 12); };
    auto nums = [&](const std::vector<double>& v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + num(v[i]);
        return s + "]";
    };
    auto differ = [](const std::string& name, const std::string& x, const std::string& y) {
        return name + " (" + x + " vs " + y + ")";
    };
    if (a.radbase != b.radbase) return differ("radbase", a.radbase, b.radbase);
    if (a.radparameters != b.radparameters)
        return differ("radparameters", nums(a.radparameters), nums(b.radparameters));
    if (a.rcut != b.rcut) return differ("rcutij", num(a.rcut), num(b.rcut));
    if (a.dcut != b.dcut) return differ("dcutij", num(a.dcut), num(b.dcut));
    if (a.nradmax != b.nradmax) return differ("nradmaxi", std::to_string(a.nradmax), std::to_string(b.nradmax));
    if (a.lmax != b.lmax) return differ("lmaxi", std::to_string(a.lmax), std::to_string(b.lmax));
    if (a.nradbase != b.nradbase) return differ("nradbaseij", std::to_string(a.nradbase), std::to_string(b.nradbase));
    if (a.crad != b.crad) return "radcoefficients";
    if (a.cutoff_function != b.cutoff_function)
        return differ("NameOfCutoffFunctionij", a.cutoff_function, b.cutoff_function);
    if (a.inner_cutoff_type != b.inner_cutoff_type)
        return differ("inner_cutoff_type", a.inner_cutoff_type, b.inner_cutoff_type);
    if (a.r_in != b.r_in) return differ("r_in", num(a.r_in), num(b.r_in));
    if (a.delta_in != b.delta_in) return differ("delta_in", num(a.delta_in), num(b.delta_in));
    if (a.core_prefactor != b.core_prefactor || a.core_lambda != b.core_lambda)
        return differ("core-repulsion", nums({a.core_prefactor, a.core_lambda}),
                      nums({b.core_prefactor, b.core_lambda}));
    return "";
}

// What one `speciesblock` of the file says.
struct Block {
    std::string name;
    std::vector<std::string> elements;  // central element first; "Cu" becomes {"Cu", "Cu"}
    int nspecies = 0;                   // distinct elements in the block name
    bool has_embedding = false;
    Embedding embedding;
    bool has_radial = false, has_core = false;
    BondSpec bond;
    struct Func {
        std::vector<std::string> elements;
        std::vector<int> ns, ls, LS;
        std::vector<double> c;
    };
    std::vector<Func> funcs;
};

// Bounds the loading time of a file of many functions, each under kMaxCouplingWork, to a few
// seconds, while the largest real potentials (3 elements, 85000 functions) need 3e6.
constexpr double kMaxCouplingWorkTotal = 5e7;

// Sum of the radial spline tables of all bonds: a potential with many elements has one table per
// ordered pair, each under RadialTable::kMaxBytes. 8 elements with real sizes take ~1 GB.
constexpr double kMaxTableBytesTotal = 2.0 * 1024 * 1024 * 1024;

std::string count(double x) { return text::number(x, 3); }

bool finite(double x) { return std::isfinite(x); }
template <class T>
bool finite(const std::vector<T>& v) {
    return std::all_of(v.begin(), v.end(), [](const T& x) { return finite(x); });
}
template <class T>
bool finite(const T&) {
    return true;
}

class Reader {
public:
    explicit Reader(std::string path) : path_(std::move(path)) {}

    [[noreturn]] void fail(const std::string& what) const {
        throw InputError("potential file '" + path_ + "': " + what);
    }

    template <class T>
    T get(const YAML::Node& node, const std::string& key, const std::string& where) const {
        if (!node.IsMap()) fail(where + ": expected a mapping (with key '" + key + "')");
        const YAML::Node v = node[key];
        if (!v) fail(where + ": missing key '" + key + "'");
        T out;
        try {
            out = v.as<T>();
        } catch (const YAML::Exception&) {
            fail(where + ": key '" + key + "' has the wrong type or shape");
        }
        if (!finite(out)) fail(where + ": key '" + key + "' holds a non-finite number (nan or inf)");
        return out;
    }
    // a size that sets how much memory the basis takes
    int get_size(const YAML::Node& node, const std::string& key, int max, const std::string& where) const {
        const int v = get<int>(node, key, where);
        if (v < 0 || v > max)
            fail(where + ": '" + key + "' = " + std::to_string(v) + " is outside 0.." + std::to_string(max));
        return v;
    }
    template <class T>
    T get_or(const YAML::Node& node, const std::string& key, const T& fallback,
             const std::string& where) const {
        return node[key] ? get<T>(node, key, where) : fallback;
    }

    Block read_block(const YAML::Node& yb, std::map<std::string, int>& ndensity_of) {
        Block b;
        if (!yb.IsMap()) fail("each entry of 'species' must be a mapping");
        b.name = get<std::string>(yb, "speciesblock", "species block");
        const std::string where = "block '" + b.name + "'";
        b.elements = split_words(b.name);
        if (b.elements.empty()) fail(where + ": empty speciesblock name");
        b.nspecies = int(std::set<std::string>(b.elements.begin(), b.elements.end()).size());
        if (b.nspecies == 1 && b.elements.size() == 1) b.elements.push_back(b.elements[0]);
        const std::string& mu0 = b.elements[0];

        if (b.nspecies == 1) {
            b.has_embedding = true;
            Embedding& e = b.embedding;
            e.ndensity = get_size(yb, "ndensityi", 64, where);
            if (e.ndensity < 1) fail(where + ": ndensityi must be >= 1");
            if (ndensity_of.count(mu0)) fail(where + ": embedding of " + mu0 + " defined twice");
            ndensity_of[mu0] = e.ndensity;
            e.npoti = get<std::string>(yb, "npoti", where);
            if (e.npoti != "FinnisSinclair" && e.npoti != "FinnisSinclairShiftedScaled")
                fail(where + ": unknown embedding npoti '" + e.npoti +
                     "' (known: FinnisSinclair, FinnisSinclairShiftedScaled)");
            e.parameters = get<std::vector<double>>(yb, "parameters", where);
            if (int(e.parameters.size()) != 2 * e.ndensity)
                fail(where + ": 'parameters' must hold 2*ndensityi = " + std::to_string(2 * e.ndensity) +
                     " numbers, found " + std::to_string(e.parameters.size()));
            for (int q = 0; q < e.ndensity; ++q)
                if (!(e.parameters[2 * q + 1] > 0))
                    fail(where + ": the exponent of density " + std::to_string(q) +
                         " in 'parameters' must be > 0");
            e.rho_core_cut = get_or<double>(yb, "rho_core_cut", 100000.0, where);
            e.drho_core_cut = get_or<double>(yb, "drho_core_cut", 250.0, where);
        }

        BondSpec& s = b.bond;
        if (yb["lmaxi"]) {
            b.has_radial = true;
            s.lmax = get_size(yb, "lmaxi", 50, where);
            s.nradmax = get_size(yb, "nradmaxi", 1000, where);
            s.nradbase = get_size(yb, "nradbaseij", 1000, where);
            s.radbase = get<std::string>(yb, "radbase", where);
            s.radparameters = get<std::vector<double>>(yb, "radparameters", where);
            if (s.radparameters.empty()) fail(where + ": 'radparameters' is empty");
            if ((s.radbase == "ChebExpCos" || s.radbase == "ChebPow") && !(s.radparameters[0] > 0))
                fail(where + ": radparameters[0] (lambda) of " + s.radbase + " must be > 0");
            read_radcoefficients(yb, s, where);
            s.rcut = get<double>(yb, "rcutij", where);
            s.dcut = get<double>(yb, "dcutij", where);
            if (!(s.rcut > 0)) fail(where + ": rcutij must be positive");
            s.cutoff_function = get_or<std::string>(yb, "NameOfCutoffFunctionij", "cos", where);
        } else if (yb["nradmaxi"] || yb["nradbaseij"] || yb["radbase"] || yb["radparameters"] ||
                   yb["radcoefficients"]) {
            fail(where + ": radial basis only partially defined (lmaxi missing)");
        }
        if (yb["core-repulsion"]) {
            b.has_core = true;
            auto core = get<std::vector<double>>(yb, "core-repulsion", where);
            if (core.size() != 2) fail(where + ": 'core-repulsion' must be [prefactor, lambda]");
            s.core_prefactor = core[0];
            s.core_lambda = core[1];
        }
        s.inner_cutoff_type = get_or<std::string>(yb, "inner_cutoff_type", "density", where);
        if (s.inner_cutoff_type != "density" && s.inner_cutoff_type != "distance" &&
            s.inner_cutoff_type != "zbl")
            fail(where + ": unknown inner_cutoff_type '" + s.inner_cutoff_type +
                 "' (known: density, distance, zbl)");
        s.r_in = get_or<double>(yb, "r_in", 0.0, where);
        s.delta_in = get_or<double>(yb, "delta_in", 0.0, where);

        const YAML::Node nbody = yb["nbody"];
        if (nbody && !nbody.IsSequence()) fail(where + ": 'nbody' must be a list");
        std::set<std::string> block_elements(b.elements.begin(), b.elements.end());
        if (nbody) {
            int k = 0;
            for (const auto& yf : nbody) {
                const std::string fw = where + ", nbody[" + std::to_string(k++) + "]";
                if (!yf.IsMap()) fail(fw + ": must be a mapping");
                Block::Func f;
                f.elements = split_words(get<std::string>(yf, "type", fw));
                if (f.elements.size() < 2) fail(fw + ": 'type' needs the central and >= 1 neighbour element");
                if (f.elements[0] != mu0)
                    fail(fw + ": central element '" + f.elements[0] + "' is not the block's '" + mu0 + "'");
                for (size_t r = 1; r < f.elements.size(); ++r)
                    if (!block_elements.count(f.elements[r]))
                        fail(fw + ": element '" + f.elements[r] + "' is not in the block's elements");
                const int rank = int(f.elements.size()) - 1;
                f.ns = get<std::vector<int>>(yf, "nr", fw);
                f.ls = get<std::vector<int>>(yf, "nl", fw);
                if (int(f.ns.size()) != rank || int(f.ls.size()) != rank)
                    fail(fw + ": 'nr' and 'nl' must have one entry per neighbour (" + std::to_string(rank) + ")");
                for (int n : f.ns)
                    if (n < 1) fail(fw + ": 'nr' entries start at 1");
                for (int l : f.ls)
                    if (l < 0) fail(fw + ": negative 'nl'");
                const YAML::Node c = yf["c"];
                if (!c) fail(fw + ": missing key 'c'");
                if (c.IsScalar())
                    f.c = {get<double>(yf, "c", fw)};
                else
                    f.c = get<std::vector<double>>(yf, "c", fw);
                if (rank > 2) {
                    f.LS = get<std::vector<int>>(yf, "lint", fw);
                    if (int(f.LS.size()) != rank - 2)
                        fail(fw + ": 'lint' must have rank-2 = " + std::to_string(rank - 2) + " entries");
                }
                if (yf["skip"] && get<bool>(yf, "skip", fw)) continue;
                const double work = coupling_work(f.ls);
                if (work > kMaxCouplingWork)
                    fail(fw + " ('" + get<std::string>(yf, "type", fw) + "', nl " + text::join_ints(f.ls) +
                         "): coupling its angular momenta would take " + count(work) +
                         " steps, more than the limit of " + count(kMaxCouplingWork) +
                         " per function; real potentials (rank <= 6, nl <= ~6) need at most a few thousand");
                coupling_work_ += work;
                if (coupling_work_ > kMaxCouplingWorkTotal)
                    fail(fw + ": coupling the angular momenta of the functions up to here would take " +
                         count(coupling_work_) + " steps, more than the limit of " + count(kMaxCouplingWorkTotal) +
                         " per file; real potentials, even with 1e5 functions, need a few million");
                b.funcs.push_back(std::move(f));
            }
        }
        return b;
    }

    void read_radcoefficients(const YAML::Node& yb, BondSpec& s, const std::string& where) const {
        const YAML::Node rc = yb["radcoefficients"];
        if (!rc) fail(where + ": missing key 'radcoefficients'");
        const size_t nl = size_t(s.lmax) + 1;
        const size_t ncrad = size_t(s.nradmax) * nl * size_t(s.nradbase);
        // Sizes are compared with what the file holds before crad is allocated: nradmaxi, lmaxi
        // and nradbaseij alone could ask for ~400 MB.
        auto fill = [&](auto value_at) {
            s.crad.assign(ncrad, 0.0);
            for (int n = 0; n < s.nradmax; ++n)
                for (size_t l = 0; l < nl; ++l)
                    for (int k = 0; k < s.nradbase; ++k)
                        s.crad[(size_t(n) * nl + l) * s.nradbase + k] = value_at(n, l, k);
        };
        bool nested = rc.IsSequence() && rc.size() > 0 && rc[0].IsSequence();
        if (nested) {
            auto c = get<std::vector<std::vector<std::vector<double>>>>(yb, "radcoefficients", where);
            if (int(c.size()) != s.nradmax) fail(where + ": radcoefficients must have nradmaxi rows");
            for (int n = 0; n < s.nradmax; ++n) {
                if (c[n].size() != nl) fail(where + ": radcoefficients[n] must have lmaxi+1 rows");
                for (size_t l = 0; l < nl; ++l)
                    if (int(c[n][l].size()) != s.nradbase)
                        fail(where + ": radcoefficients[n][l] must have nradbaseij entries");
            }
            fill([&](int n, size_t l, int k) { return c[n][l][k]; });
        } else {
            auto c = get<std::vector<double>>(yb, "radcoefficients", where);
            if (c.size() != ncrad)
                fail(where + ": flat radcoefficients must hold nradmaxi*(lmaxi+1)*nradbaseij = " +
                     std::to_string(ncrad) + " numbers, found " + std::to_string(c.size()));
            // Older files store a flat list, k slowest, then n, then l.
            fill([&](int n, size_t l, int k) { return c[(size_t(k) * s.nradmax + n) * nl + l]; });
        }
    }

private:
    std::string path_;
    double coupling_work_ = 0;  // summed over the functions read so far
};

// Canonical order of basis functions: the order defines the projection vector, so active sets
// stay exchangeable with pacemaker's. The reference sorts by (rank, mus, ns, ls) and then, among
// functions that differ only in lint, by the number of m-combinations its coupling generator
// keeps and by those combinations. Its generator keeps some terms whose Clebsch-Gordan product
// is zero only up to rounding (~1e-17), ours drops exact zeros, so that last criterion can
// disagree (about 2 % of the functions of a basis with rank-4 functions of l >= 3). Files that
// the reference writes list each block's functions in its order already; that order is then
// kept (the blocks merged by function_prefix_less), and function_less is the fallback for files
// that do not.
bool function_prefix_less(const BasisFunction& a, const BasisFunction& b) {
    if (a.rank != b.rank) return a.rank < b.rank;
    if (a.mus != b.mus) return a.mus < b.mus;
    if (a.ns != b.ns) return a.ns < b.ns;
    return a.ls < b.ls;
}

bool function_less(const BasisFunction& a, const BCouplings& ra, const BasisFunction& b,
                   const BCouplings& rb) {
    if (function_prefix_less(a, b)) return true;
    if (function_prefix_less(b, a)) return false;
    if (ra.num_ms_combs() != rb.num_ms_combs()) return ra.num_ms_combs() < rb.num_ms_combs();
    return ra.ms < rb.ms;
}

std::uint64_t fnv1a(const std::string& s) {
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char ch : s) {
        h ^= ch;
        h *= 1099511628211ull;
    }
    return h;
}

}  // namespace

int Potential::element_index(const std::string& symbol) const {
    auto it = element_index_.find(symbol);
    return it == element_index_.end() ? -1 : it->second;
}

std::shared_ptr<Potential> Potential::load(const std::string& path) {
    Reader rd(path);
    {
        std::ifstream probe(path);
        if (!probe) throw InputError("potential file '" + path + "': cannot be opened (missing or unreadable)");
        if (std::filesystem::is_directory(path)) rd.fail("is a directory, not a potential file");
        char magic[4] = {0, 0, 0, 0};
        probe.read(magic, 4);
        if (std::string(magic, 4) == std::string("PK\x03\x04", 4))
            rd.fail("a zip archive (an active set, .asi or .casi, in the place of the potential?), not a "
                    "pacemaker potential .yaml");
    }
    YAML::Node root;
    try {
        root = YAML::LoadFile(path);
    } catch (const YAML::Exception& e) {
        rd.fail(std::string("malformed YAML: ") + e.what());
    }
    if (!root.IsMap()) rd.fail("not a pacemaker potential (top level is not a mapping)");
    if (root["elements"] && root["embeddings"] && !root["species"]) {
        if (root["deltaSplineBins"])
            rd.fail("this is a .yace file (pyace's format for LAMMPS), which has no B-basis and gives no "
                    "projections: use the .yaml potential it was made from");
        rd.fail("this is a pacemaker basis *configuration*, not a potential; fit it first");
    }
    if (!root["species"] || !root["species"].IsSequence() || root["species"].size() == 0)
        rd.fail("missing or empty 'species' list (a .yace file has none: use the .yaml potential)");
    if (!root["global"]) rd.fail("missing 'global' section");

    auto pot = std::make_shared<Potential>();
    pot->path_ = path;
    pot->delta_spline_bins_ = rd.get<double>(root["global"], "DeltaSplineBins", "global");
    if (!(pot->delta_spline_bins_ > 0)) rd.fail("global: DeltaSplineBins must be positive");

    std::map<std::string, int> ndensity_of;
    std::vector<Block> blocks;
    for (const auto& yb : root["species"]) blocks.push_back(rd.read_block(yb, ndensity_of));

    std::set<std::string> names;
    for (const auto& b : blocks) names.insert(b.elements.begin(), b.elements.end());
    pot->elements_.assign(names.begin(), names.end());  // std::set is sorted
    for (size_t i = 0; i < pot->elements_.size(); ++i) pot->element_index_[pot->elements_[i]] = int(i);
    const int ne = pot->nelements();

    // A pair block may leave its radial basis or core repulsion to its mirror block.
    for (auto& b : blocks) {
        if (b.nspecies != 2) continue;
        for (const auto& d : blocks) {
            if (d.nspecies != 2 || d.elements[0] != b.elements[1] || d.elements[1] != b.elements[0]) continue;
            if (!b.has_radial && d.has_radial) {
                BondSpec keep = b.bond;
                b.bond = d.bond;
                b.has_radial = true;
                if (b.has_core) {
                    b.bond.core_prefactor = keep.core_prefactor;
                    b.bond.core_lambda = keep.core_lambda;
                    b.bond.inner_cutoff_type = keep.inner_cutoff_type;
                    b.bond.r_in = keep.r_in;
                    b.bond.delta_in = keep.delta_in;
                }
            }
            if (!b.has_core && d.has_core) {
                b.bond.core_prefactor = d.bond.core_prefactor;
                b.bond.core_lambda = d.bond.core_lambda;
                b.bond.inner_cutoff_type = d.bond.inner_cutoff_type;
                b.bond.r_in = d.bond.r_in;
                b.bond.delta_in = d.bond.delta_in;
            }
        }
    }

    // The two blocks of a pair describe one bond: pyace refuses a file where they disagree, and
    // LAMMPS's neighbour lists (one cutoff per type pair) assume they do not.
    for (const auto& b : blocks) {
        if (b.nspecies != 2 || !(b.elements[0] < b.elements[1])) continue;
        for (const auto& d : blocks) {
            if (d.nspecies != 2 || d.elements[0] != b.elements[1] || d.elements[1] != b.elements[0]) continue;
            const std::string field = bond_difference(b.bond, d.bond);
            if (!field.empty())
                rd.fail("blocks '" + b.name + "' and '" + d.name + "' differ in " + field +
                        ": the two blocks of a pair share one radial basis and core repulsion (pyace requires it)");
        }
    }

    pot->embeddings_.assign(ne, Embedding());
    std::vector<bool> has_embedding(ne, false);
    pot->bonds_.assign(size_t(ne) * ne, BondSpec());
    std::vector<bool> has_bond(size_t(ne) * ne, false);
    bool inner_set = false;
    for (auto& b : blocks) {
        const int mi = pot->element_index(b.elements[0]);
        if (b.has_embedding) {
            pot->embeddings_[mi] = b.embedding;
            has_embedding[mi] = true;
        }
        if (b.nspecies > 2) continue;
        const int mj = pot->element_index(b.elements[1]);
        const std::string where = "block '" + b.name + "'";
        if (!b.has_radial) rd.fail(where + ": no radial basis here nor in its mirror block");
        // Sizes grow to what the functions use, as the reference does.
        for (const auto& f : b.funcs) {
            const int rank = int(f.ns.size());
            const int maxn = *std::max_element(f.ns.begin(), f.ns.end());
            const int maxl = *std::max_element(f.ls.begin(), f.ls.end());
            if (rank == 1) {
                if (maxl != 0) rd.fail(where + ": rank-1 function with nl != 0");
                if (maxn > b.bond.nradbase) rd.fail(where + ": rank-1 function with nr > nradbaseij");
            } else {
                if (maxn > b.bond.nradmax) rd.fail(where + ": function with nr > nradmaxi");
                if (maxl > b.bond.lmax) rd.fail(where + ": function with nl > lmaxi");
            }
        }
        if (!inner_set) {
            pot->inner_cutoff_type_ = b.bond.inner_cutoff_type;
            inner_set = true;
        } else if (pot->inner_cutoff_type_ != b.bond.inner_cutoff_type) {
            rd.fail(where + ": inner_cutoff_type must be the same in all one- and two-element blocks");
        }
        b.bond.z_i = atomic_number(b.elements[0]);
        b.bond.z_j = atomic_number(b.elements[1]);
        pot->bonds_[size_t(mi) * ne + mj] = b.bond;
        has_bond[size_t(mi) * ne + mj] = true;
    }
    // A pair block may be left out altogether when no function centred on its first element has
    // the second among its neighbours: the pair then adds nothing to the first element's atoms
    // (pyace gives it a bond of zeros), so it takes the mirror's radial basis and cutoff, with no
    // core repulsion and no inner cut-off. Functions that would need its radial basis (of a
    // three-element block, say) leave it undefined: refused.
    for (int i = 0; i < ne; ++i)
        for (int j = 0; j < ne; ++j) {
            if (has_bond[size_t(i) * ne + j] || !has_bond[size_t(j) * ne + i]) continue;
            const std::string &ei = pot->elements_[i], &ej = pot->elements_[j];
            for (const auto& b : blocks)
                for (const auto& f : b.funcs)
                    if (f.elements[0] == ei && std::find(f.elements.begin() + 1, f.elements.end(), ej) != f.elements.end())
                        rd.fail("block '" + b.name + "' has functions of " + ei + " atoms with " + ej +
                                " neighbours, but there is no block '" + ei + " " + ej + "' with their radial basis");
            BondSpec bond = pot->bonds_[size_t(j) * ne + i];
            std::swap(bond.z_i, bond.z_j);
            bond.core_prefactor = 0.0;
            bond.core_lambda = 1.0;
            bond.r_in = bond.delta_in = 0.0;
            pot->bonds_[size_t(i) * ne + j] = bond;
            has_bond[size_t(i) * ne + j] = true;
        }
    for (int i = 0; i < ne; ++i) {
        if (!has_embedding[i]) rd.fail("element '" + pot->elements_[i] + "' has no single-element block (embedding)");
        for (int j = 0; j < ne; ++j)
            if (!has_bond[size_t(i) * ne + j])
                rd.fail("no radial basis for the pair " + pot->elements_[i] + "-" + pot->elements_[j]);
    }

    for (const auto& s : pot->bonds_) {
        pot->lmax_ = std::max(pot->lmax_, s.lmax);
        pot->nradmax_ = std::max(pot->nradmax_, s.nradmax);
        pot->nradbase_ = std::max(pot->nradbase_, s.nradbase);
        pot->cutoff_max_ = std::max(pot->cutoff_max_, s.rcut);
    }
    for (const auto& e : pot->embeddings_) pot->ndensitymax_ = std::max(pot->ndensitymax_, e.ndensity);

    // Sizes first, so that no table is built when they would not all fit.
    double table_bytes = 0;
    for (size_t k = 0; k < pot->bonds_.size(); ++k) {
        try {
            table_bytes += RadialTable::checked_size(pot->bonds_[k].rcut, pot->delta_spline_bins_, pot->nradbase_,
                                                     pot->nradmax_, pot->lmax_);
        } catch (const std::invalid_argument& e) {
            rd.fail("bond " + pot->elements_[k / ne] + "-" + pot->elements_[k % ne] + ": " + e.what());
        }
    }
    if (table_bytes > kMaxTableBytesTotal)
        rd.fail("the radial spline tables of its " + std::to_string(pot->bonds_.size()) + " bonds would take " +
                count(table_bytes / (1 << 30)) + " GiB, more than the limit of " +
                count(kMaxTableBytesTotal / (1 << 30)) + " GiB (rcutij up to " + count(pot->cutoff_max_) +
                ", DeltaSplineBins = " + count(pot->delta_spline_bins_) + ", nradbaseij = " +
                std::to_string(pot->nradbase_) + ", nradmaxi = " + std::to_string(pot->nradmax_) +
                ", lmaxi = " + std::to_string(pot->lmax_) + ")");

    pot->tables_.resize(pot->bonds_.size());
    for (size_t k = 0; k < pot->bonds_.size(); ++k) {
        try {
            pot->tables_[k] = std::make_shared<RadialTable>(pot->bonds_[k], pot->delta_spline_bins_,
                                                            pot->nradbase_, pot->nradmax_, pot->lmax_);
        } catch (const std::invalid_argument& e) {
            rd.fail("bond " + pot->elements_[k / ne] + "-" + pot->elements_[k % ne] + ": " + e.what());
        }
    }

    // Functions of all blocks, grouped by central element, in canonical order.
    struct Entry {
        BasisFunction f;
        BCouplings raw;
    };
    std::vector<std::vector<Entry>> per_element(ne);
    std::vector<bool> in_order(ne, true);  // every block of the element lists its functions in order
    for (const auto& b : blocks) {
        const int mu0 = pot->element_index(b.elements[0]);
        const std::string where = "block '" + b.name + "'";
        const size_t block_start = per_element[mu0].size();
        for (const auto& bf : b.funcs) {
            Entry e;
            e.f.rank = int(bf.ns.size());
            for (size_t r = 1; r < bf.elements.size(); ++r) e.f.mus.push_back(pot->element_index(bf.elements[r]));
            e.f.ns = bf.ns;
            e.f.ls = bf.ls;
            e.f.LS = bf.LS;
            e.f.coeff = bf.c;
            if (int(e.f.coeff.size()) != pot->embeddings_[mu0].ndensity)
                rd.fail(where + ": a function has " + std::to_string(e.f.coeff.size()) +
                        " coefficients but the embedding of " + b.elements[0] + " has ndensityi = " +
                        std::to_string(pot->embeddings_[mu0].ndensity));
            for (int r = 0; r < e.f.rank; ++r) {
                const BondSpec& s = pot->bonds_[size_t(mu0) * ne + e.f.mus[r]];
                if (e.f.rank == 1 ? e.f.ns[r] > s.nradbase : (e.f.ns[r] > s.nradmax || e.f.ls[r] > s.lmax))
                    rd.fail(where + ": a function exceeds the radial basis of bond " + b.elements[0] + "-" +
                            pot->elements_[e.f.mus[r]]);
            }
            if (e.f.rank > 1) {
                try {
                    e.f.couplings = couple_b_function(e.f.mus, e.f.ns, e.f.ls, e.f.LS, &e.raw);
                } catch (const std::invalid_argument& ex) {
                    rd.fail(where + ": function with nl/lint not coupled to a scalar: " + ex.what());
                }
            } else {
                e.raw.rank = 1;
                e.raw.ms = {0};
                e.raw.gen_cg = {1.0};
                e.f.couplings = e.raw;
            }
            per_element[mu0].push_back(std::move(e));
        }
        const auto& v = per_element[mu0];
        const auto prefix_less = [](const Entry& a, const Entry& c) { return function_prefix_less(a.f, c.f); };
        in_order[mu0] = in_order[mu0] && std::is_sorted(v.begin() + block_start, v.end(), prefix_less);
    }
    pot->rank1_.assign(ne, {});
    pot->higher_.assign(ne, {});
    for (int mu = 0; mu < ne; ++mu) {
        auto& v = per_element[mu];
        // Blocks in the reference's order (as it writes them): merged keeping each block's order,
        // see function_prefix_less (functions that tie on it are of one block: mus names it).
        // Otherwise std::sort, not stable_sort, as the reference, for the ties of the full key.
        if (in_order[mu])
            std::stable_sort(v.begin(), v.end(),
                             [](const Entry& a, const Entry& b) { return function_prefix_less(a.f, b.f); });
        else
            std::sort(v.begin(), v.end(),
                      [](const Entry& a, const Entry& b) { return function_less(a.f, a.raw, b.f, b.raw); });
        for (auto& e : v) {
            pot->rankmax_ = std::max(pot->rankmax_, e.f.rank);
            (e.f.rank == 1 ? pot->rank1_[mu] : pot->higher_[mu]).push_back(std::move(e.f));
        }
    }
    return pot;
}

void Potential::set_coefficients(int mu, const std::vector<double>& c) {
    const int nd = embeddings_.at(mu).ndensity;
    if (int(c.size()) != n_functions(mu) * nd)
        throw std::invalid_argument("set_coefficients: expected " + std::to_string(n_functions(mu) * nd) +
                                    " values for element " + elements_.at(mu));
    size_t k = 0;
    for (auto* group : {&rank1_[mu], &higher_[mu]})
        for (auto& f : *group)
            for (int p = 0; p < nd; ++p) f.coeff[p] = c[k++];
    ++coefficients_version_;
}

std::vector<double> Potential::coefficients(int mu) const {
    std::vector<double> c;
    for (const auto* group : {&rank1_.at(mu), &higher_.at(mu)})
        for (const auto& f : *group) c.insert(c.end(), f.coeff.begin(), f.coeff.end());
    return c;
}

std::string Potential::basis_fingerprint() const { return fingerprint(false); }

std::string Potential::fingerprint(bool with_coefficients) const {
    std::ostringstream s;
    s << std::setprecision(17);
    for (const auto& e : elements_) s << e << ' ';
    s << '|' << delta_spline_bins_ << '|' << inner_cutoff_type_ << '|';
    for (const auto& b : bonds_) {
        s << b.radbase << ' ' << b.nradmax << ' ' << b.lmax << ' ' << b.nradbase << ' ' << b.rcut << ' '
          << b.dcut << ' ' << b.cutoff_function << ' ' << b.r_in << ' ' << b.delta_in << ' '
          << b.core_prefactor << ' ' << b.core_lambda;
        for (double x : b.radparameters) s << ' ' << x;
        for (double x : b.crad) s << ' ' << x;
        s << ';';
    }
    for (int mu = 0; mu < nelements(); ++mu) {
        const Embedding& e = embeddings_[mu];
        s << '|' << e.npoti << ' ' << e.ndensity << ' ' << e.rho_core_cut << ' ' << e.drho_core_cut;
        for (double x : e.parameters) s << ' ' << x;
        for (const auto* group : {&rank1_[mu], &higher_[mu]})
            for (const auto& f : *group) {
                s << '(';
                for (int r = 0; r < f.rank; ++r) s << f.mus[r] << ',' << f.ns[r] << ',' << f.ls[r] << ' ';
                for (int L : f.LS) s << L << ' ';
                if (with_coefficients)
                    for (double c : f.coeff) s << 'c' << c;
                s << ')';
            }
    }
    std::ostringstream hex;
    hex << std::hex << std::setw(16) << std::setfill('0') << fnv1a(s.str());
    return hex.str();
}

}  // namespace aceuq
