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

// Throws InputError naming the file for anything malformed or truncated.
std::map<std::string, NpyArray> read_npz(const std::string& path);

}  // namespace aceuq
