// Extrapolation grade gamma of atoms against global (.asi) or clustered (.casi) active sets.
// gamma_i = max_j |(b_i^T A_inv)_j|, with A_inv the inverse of the active-set matrix of the
// atom's element (and cluster). Computed as matrix products over batches of atoms.
#pragma once
#include <cstddef>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "aceuq/potential.hpp"

namespace aceuq {

enum class Assign { Nearest, Min };

// The γ kernel in use: "avx2+fma" (four-wide, picked at run time where the CPU has AVX2 and FMA)
// or "generic" (two-wide vectors, any CPU). ACEUQ_GRADER_KERNEL=generic in the environment forces
// the generic kernel (read once, at the first use).
const char* grader_kernel();

// Storage starting on a 64-byte cache line, so that no row of a kernel panel (one line) straddles
// two lines: the kernel is 1-2 % slower when the panels start 16 or 48 bytes into a line.
template <class T>
struct LineAligned {
    using value_type = T;
    LineAligned() = default;
    template <class U>
    LineAligned(const LineAligned<U>&) {}
    T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
    void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
    bool operator==(const LineAligned&) const { return true; }
    bool operator!=(const LineAligned&) const { return false; }
};
using Panels = std::vector<double, LineAligned<double>>;

// Active sets of one element.
struct ElementActiveSet {
    int n_proj = 0;                      // projection width (n_functions, or * ndensity when full)
    int k = 1;                           // clusters
    int dim = 0;                         // transformed feature dimension (0 when k == 1)
    std::vector<double> mean, scale;     // [n_proj]: T(b) = ((b - mean) / scale) . components^T
    std::vector<double> components;      // [dim][n_proj]
    std::vector<double> centers;         // [k][dim]
    std::vector<std::vector<double>> inv;  // k matrices [n_proj][n_proj], row-major
};

class Grader {
public:
    // Reads a pacemaker .asi (one cluster per element) or an aceuq .casi and checks it against
    // the potential (elements, widths, basis fingerprint for .casi). Throws InputError naming
    // the file and the problem.
    static std::shared_ptr<Grader> load(const std::string& path, const Potential& potential);

    bool full() const { return full_; }     // projections expected: full (dE/dc) or linear
    Assign assign() const { return assign_; }
    void set_assign(Assign a) { assign_ = a; }
    int nelements() const { return int(sets_.size()); }
    const ElementActiveSet& element(int mu) const { return sets_.at(mu); }
    bool has_element(int mu) const { return mu >= 0 && mu < int(sets_.size()) && !sets_[mu].inv.empty(); }

    // n atoms of element mu; proj row i starts at proj + i*stride (n_proj values).
    // Writes gamma[i] and cluster[i].
    void grade(int mu, int n, const double* proj, int stride, double* gamma, int* cluster) const;

private:
    bool full_ = false;
    Assign assign_ = Assign::Nearest;
    std::vector<ElementActiveSet> sets_;  // by potential element index; empty inv: not graded

    // Kernel-ready copies: matrices as column panels of the kernel's tile width, columns padded to
    // a multiple of it (zero columns change no product and no max |.|).
    struct Packed {
        int n_pad = 0;                         // inv columns
        std::vector<Panels> inv;               // k x [n_pad / tile][n_proj][tile]
        // Nearest centre, folded: |T(b) - c|^2 = |T(b)|^2 + kappa_c - 2 b_used . V_c, so the argmin
        // over c needs only b_used . V (no T(b)), with V = (components^T centers^T) / scale on the
        // used rows and kappa_c = |c|^2 + 2 mean_used . V_c.
        std::vector<int> used;                 // projections with a nonzero component (transform input)
        int k_pad = 0;                         // V columns
        Panels v;                              // V as panels, [k_pad / tile][used][tile]
        std::vector<double> kappa;             // [k]
    };
    std::vector<Packed> packed_;
    void pack(int mu);
    void assign_nearest(int mu, int n, const double* proj, int stride, int* cluster) const;
};

}  // namespace aceuq
