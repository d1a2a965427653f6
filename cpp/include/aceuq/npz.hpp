// Reading NumPy .npz archives (zip of .npy files, stored or deflated) without Python.
// Object arrays (pickles) are refused: an .npz is untrusted input.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace aceuq {

struct NpyArray {
    std::string dtype;               // numpy descr, e.g. "<f8", "<i8", "|u1"
    std::vector<std::size_t> shape;
    bool fortran_order = false;
    std::vector<unsigned char> data; // raw little-endian bytes, C order unless fortran_order
    std::size_t size() const;        // number of elements
    std::vector<double> as_double() const;  // f8/f4/i8/i4/u1 converted; C order
    std::string as_text() const;            // |u1 / |S bytes as UTF-8 text
};

// Limits on what an archive may inflate to, checked on the sizes the central directory declares
// before anything is inflated (an entry never inflates past its declared size: the output buffer
// has exactly that size). The largest array aceuq writes is one inverse, (n_projections)^2
// doubles: 1 GiB is a width of 11585, several times any real basis even in full mode. A .casi of
// 1000 functions, 2 densities and 16 clusters is ~0.5 GB per element; 2 GiB leaves room for
// four such elements while refusing archives that inflate to many GB from a few MB. The writers
// (Python) refuse to write what these limits would refuse to read.
constexpr double kNpzMaxEntryBytes = 1024.0 * 1024 * 1024;
constexpr double kNpzMaxTotalBytes = 2 * kNpzMaxEntryBytes;

// Throws InputError naming the file for anything malformed or truncated.
std::map<std::string, NpyArray> read_npz(const std::string& path);

}  // namespace aceuq
