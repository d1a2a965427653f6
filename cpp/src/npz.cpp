// NumPy .npz reading: a zip archive (central directory, stored or deflated entries) of .npy files.
// Formats: PKWARE APPNOTE (zip) and NEP 1 / numpy.lib.format (.npy). Everything read from the file
// is bounds-checked: the file is untrusted input.
#include "aceuq/npz.hpp"

#include "text.hpp"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>

#include "aceuq/potential.hpp"

namespace aceuq {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
    throw InputError("cannot read '" + path + "' as a NumPy .npz archive: " + what);
}

std::uint16_t le16(const unsigned char* p) { return std::uint16_t(p[0] | (p[1] << 8)); }
std::uint32_t le32(const unsigned char* p) {
    return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) | (std::uint32_t(p[3]) << 24);
}

constexpr double kMaxEntryBytes = kNpzMaxEntryBytes;  // (npz.hpp says why)
constexpr double kMaxTotalBytes = kNpzMaxTotalBytes;

std::string gib(double bytes) { return text::number(bytes / (1024.0 * 1024 * 1024), 3) + " GiB"; }

constexpr std::uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr std::uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;

// ---- .npy header: a Python dict literal with 'descr', 'fortran_order', 'shape' ----

struct HeaderParser {
    const std::string& s;
    std::size_t i = 0;

    void ws() { while (i < s.size() && std::isspace((unsigned char)s[i])) ++i; }
    bool eat(char c) { ws(); if (i < s.size() && s[i] == c) { ++i; return true; } return false; }
    bool peek(char c) { ws(); return i < s.size() && s[i] == c; }

    bool string_lit(std::string& out) {
        ws();
        if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) return false;
        const char q = s[i++];
        out.clear();
        while (i < s.size() && s[i] != q) {
            if (s[i] == '\\') return false;  // numpy never escapes inside these strings
            out += s[i++];
        }
        if (i >= s.size()) return false;
        ++i;
        return true;
    }
    bool word(const char* w) {
        ws();
        const std::size_t n = std::strlen(w);
        if (s.compare(i, n, w) == 0) { i += n; return true; }
        return false;
    }
    bool integer(std::size_t& v) {
        ws();
        if (i >= s.size() || !std::isdigit((unsigned char)s[i])) return false;
        v = 0;
        while (i < s.size() && std::isdigit((unsigned char)s[i])) {
            const std::size_t d = std::size_t(s[i++] - '0');
            if (v > (std::numeric_limits<std::size_t>::max() - d) / 10) return false;
            v = v * 10 + d;
        }
        if (i < s.size() && s[i] == 'L') ++i;  // Python 2 longs
        return true;
    }
};

void parse_npy_header(const std::string& header, NpyArray& a, std::string& err) {
    HeaderParser p{header};
    bool have_descr = false, have_order = false, have_shape = false;
    if (!p.eat('{')) { err = "header is not a dict"; return; }
    while (!p.eat('}')) {
        std::string key;
        if (!p.string_lit(key) || !p.eat(':')) { err = "malformed header"; return; }
        if (key == "descr") {
            if (p.peek('[')) { err = "structured dtypes are not supported"; return; }
            if (!p.string_lit(a.dtype)) { err = "malformed 'descr'"; return; }
            have_descr = true;
        } else if (key == "fortran_order") {
            if (p.word("True")) a.fortran_order = true;
            else if (p.word("False")) a.fortran_order = false;
            else { err = "malformed 'fortran_order'"; return; }
            have_order = true;
        } else if (key == "shape") {
            if (!p.eat('(')) { err = "malformed 'shape'"; return; }
            a.shape.clear();
            while (!p.eat(')')) {
                std::size_t d;
                if (!p.integer(d)) { err = "malformed 'shape'"; return; }
                a.shape.push_back(d);
                if (!p.eat(',') && !p.peek(')')) { err = "malformed 'shape'"; return; }
            }
            have_shape = true;
        } else {
            err = "unexpected header key '" + key + "'";
            return;
        }
        if (!p.eat(',') && !p.peek('}')) { err = "malformed header"; return; }
    }
    if (!have_descr || !have_order || !have_shape) err = "header lacks descr, fortran_order or shape";
}

// Item size of a supported dtype, after normalising byte order to '<' (or '|'); 0 if unsupported.
std::size_t normalise_dtype(std::string& d, bool& swap, std::string& err) {
    swap = false;
    if (d.size() < 2) { err = "unknown dtype '" + d + "'"; return 0; }
    char order = d[0];
    const char kind = d[1];
    if (kind == 'O') { err = "object arrays (pickles) are refused"; return 0; }
    if (order != '<' && order != '>' && order != '|' && order != '=') { err = "unknown dtype '" + d + "'"; return 0; }
    std::size_t size = 0;
    for (std::size_t k = 2; k < d.size(); ++k) {
        if (!std::isdigit((unsigned char)d[k]) || size > 1u << 20) { err = "unknown dtype '" + d + "'"; return 0; }
        size = size * 10 + std::size_t(d[k] - '0');
    }
    const bool numeric = (kind == 'f' && (size == 4 || size == 8)) ||
                         ((kind == 'i' || kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
                         (kind == 'b' && size == 1);
    if (!numeric && !(kind == 'S' && size >= 1)) {
        err = "unsupported dtype '" + d + "'";
        return 0;
    }
    if (order == '=') order = '<';  // numpy writes '<' or '|' on every little-endian machine
    if (size == 1 || kind == 'S') order = '|';
    if (order == '>') swap = true;
    d = std::string(1, order == '>' ? '<' : order) + kind + std::to_string(size);
    return size;
}

NpyArray parse_npy(const std::string& path, const std::string& name, std::vector<unsigned char>&& raw) {
    const unsigned char* p = raw.data();
    const std::size_t n = raw.size();
    auto bad = [&](const std::string& what) { fail(path, "entry '" + name + "': " + what); };
    static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    if (n < 10 || std::memcmp(p, magic, 6) != 0) bad("not a .npy array (bad magic)");
    const int major = p[6];
    std::size_t hlen, off;
    if (major == 1) { hlen = le16(p + 8); off = 10; }
    else if (major == 2 || major == 3) {
        if (n < 12) bad("truncated .npy header");
        hlen = le32(p + 8); off = 12;
    } else bad(".npy format version " + std::to_string(major) + " is not supported");
    if (hlen > n - off) bad("truncated .npy header");
    const std::string header(reinterpret_cast<const char*>(p + off), hlen);
    off += hlen;

    NpyArray a;
    std::string err;
    parse_npy_header(header, a, err);
    if (!err.empty()) bad(err);
    bool swap = false;
    const std::size_t item = normalise_dtype(a.dtype, swap, err);
    if (!item) bad(err);
    std::size_t count = 1;
    for (std::size_t d : a.shape) {
        if (d && count > std::numeric_limits<std::size_t>::max() / d) bad("shape too large");
        count *= d;
    }
    if (count && item > std::numeric_limits<std::size_t>::max() / count) bad("shape too large");
    const std::size_t bytes = count * item;
    if (n - off < bytes) bad("truncated array data (" + std::to_string(n - off) + " of " + std::to_string(bytes) + " bytes)");
    if (n - off > bytes) bad("trailing bytes after the array data");
    // Keep the entry's buffer (no copy: entries may be large); the header is cut off in place.
    raw.erase(raw.begin(), raw.begin() + std::ptrdiff_t(off));
    a.data = std::move(raw);
    if (swap)
        for (std::size_t k = 0; k < count; ++k) std::reverse(a.data.begin() + k * item, a.data.begin() + (k + 1) * item);
    return a;
}

std::vector<unsigned char> inflate_raw(const unsigned char* src, std::size_t csize, std::size_t usize,
                                       const std::string& path, const std::string& name) {
    std::vector<unsigned char> out(usize ? usize : 1);  // zlib wants a valid pointer even for 0 bytes
    z_stream zs;
    std::memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, -15) != Z_OK) fail(path, "zlib initialisation failed");
    zs.next_in = const_cast<unsigned char*>(src);
    zs.avail_in = uInt(csize);
    zs.next_out = out.data();
    zs.avail_out = uInt(usize);
    const int rc = inflate(&zs, Z_FINISH);
    const std::size_t got = zs.total_out;
    const std::string msg = zs.msg ? std::string(" (") + zs.msg + ")" : "";
    inflateEnd(&zs);
    if (rc != Z_STREAM_END || got != usize) fail(path, "entry '" + name + "': corrupt or truncated deflate data" + msg);
    out.resize(usize);
    return out;
}

}  // namespace

std::size_t NpyArray::size() const {
    std::size_t n = 1;
    for (std::size_t d : shape) n *= d;
    return n;
}

namespace {
template <class T>
T load_le(const unsigned char* p) {
    T v;
    std::memcpy(&v, p, sizeof v);  // data is little-endian; so are all hosts we build for
    return v;
}
}  // namespace

std::vector<double> NpyArray::as_double() const {
    const std::size_t n = size();
    std::vector<double> v(n);
    const unsigned char* p = data.data();
    const std::string kind = dtype.substr(1);
    if (kind == "f8") for (std::size_t k = 0; k < n; ++k) v[k] = load_le<double>(p + 8 * k);
    else if (kind == "f4") for (std::size_t k = 0; k < n; ++k) v[k] = load_le<float>(p + 4 * k);
    else if (kind == "i8") for (std::size_t k = 0; k < n; ++k) v[k] = double(load_le<std::int64_t>(p + 8 * k));
    else if (kind == "u8") for (std::size_t k = 0; k < n; ++k) v[k] = double(load_le<std::uint64_t>(p + 8 * k));
    else if (kind == "i4") for (std::size_t k = 0; k < n; ++k) v[k] = load_le<std::int32_t>(p + 4 * k);
    else if (kind == "u4") for (std::size_t k = 0; k < n; ++k) v[k] = load_le<std::uint32_t>(p + 4 * k);
    else if (kind == "i2") for (std::size_t k = 0; k < n; ++k) v[k] = load_le<std::int16_t>(p + 2 * k);
    else if (kind == "u2") for (std::size_t k = 0; k < n; ++k) v[k] = load_le<std::uint16_t>(p + 2 * k);
    else if (kind == "i1") for (std::size_t k = 0; k < n; ++k) v[k] = double(static_cast<signed char>(p[k]));
    else if (kind == "u1" || kind == "b1") for (std::size_t k = 0; k < n; ++k) v[k] = p[k];
    else throw InputError("array of dtype '" + dtype + "' is not numeric");
    if (fortran_order && shape.size() > 1) {
        // column-major -> row-major: index arithmetic over the general shape
        std::vector<double> c(n);
        const std::size_t nd = shape.size();
        std::vector<std::size_t> idx(nd, 0);
        for (std::size_t f = 0; f < n; ++f) {
            std::size_t ci = 0;
            for (std::size_t d = 0; d < nd; ++d) ci = ci * shape[d] + idx[d];
            c[ci] = v[f];
            for (std::size_t d = 0; d < nd; ++d) {  // first index fastest
                if (++idx[d] < shape[d]) break;
                idx[d] = 0;
            }
        }
        v.swap(c);
    }
    return v;
}

std::string NpyArray::as_text() const {
    if (dtype != "|u1" && dtype != "|i1" && (dtype.size() < 2 || dtype[1] != 'S'))
        throw InputError("array of dtype '" + dtype + "' is not text");
    std::string s(data.begin(), data.end());
    if (dtype[1] == 'S') {
        // fixed-width byte strings are NUL padded
        std::string t;
        for (char c : s) if (c) t += c;
        s.swap(t);
    }
    return s;
}

std::map<std::string, NpyArray> read_npz(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw InputError("cannot open '" + path + "'");
    std::vector<unsigned char> buf;
    try {  // a directory opens, and fails on the first read
        buf.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } catch (const std::exception&) {
        fail(path, "the file cannot be read (a directory?)");
    }
    const std::size_t size = buf.size();
    const unsigned char* b = buf.data();

    // End of central directory: 22 bytes plus a comment of up to 65535 bytes, at the very end.
    if (size < 22) fail(path, size ? "not a zip file (too short)" : "empty file");
    std::size_t eocd = std::string::npos;
    const std::size_t lo = size > 22 + 65535 ? size - 22 - 65535 : 0;
    for (std::size_t k = size - 22 + 1; k-- > lo;) {
        if (le32(b + k) == kEndSig && k + 22 + le16(b + k + 20) == size) { eocd = k; break; }
    }
    if (eocd == std::string::npos) {
        if (size >= 4 && le32(b) == kLocalSig) fail(path, "truncated zip archive (no end of central directory)");
        // text where an archive belongs: most often files given in the wrong order
        bool text = true;
        for (std::size_t k = 0; k < std::min<std::size_t>(size, 256); ++k)
            text = text && (b[k] >= 0x20 || b[k] == '\n' || b[k] == '\r' || b[k] == '\t');
        fail(path, text ? "not a zip file but text (a potential .yaml or a structure file in the place of an "
                          "active set? .asi and .casi files are NumPy archives)"
                        : "not a zip file");
    }
    if (eocd >= 20 && le32(b + eocd - 20) == kZip64LocatorSig)
        fail(path, "zip64 archives are not supported");
    const std::size_t n_entries = le16(b + eocd + 10);
    const std::size_t cd_size = le32(b + eocd + 12), cd_off = le32(b + eocd + 16);
    if (le16(b + eocd + 4) != 0 || le16(b + eocd + 6) != 0 || le16(b + eocd + 8) != n_entries)
        fail(path, "multi-disk zip archives are not supported");
    if (n_entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu)
        fail(path, "zip64 archives are not supported");
    if (cd_off > eocd || cd_size > eocd - cd_off) fail(path, "truncated or corrupt central directory");
    (void)kZip64EndSig;

    // The central directory, read whole and its declared sizes checked before anything is inflated.
    struct Entry {
        unsigned flags, method;
        std::uint32_t crc;
        std::size_t csize, usize, local;
        std::string fname;
    };
    std::vector<Entry> entries;
    std::size_t p = cd_off;
    const std::size_t cd_end = cd_off + cd_size;
    double total = 0;
    for (std::size_t e = 0; e < n_entries; ++e) {
        if (p + 46 > cd_end || le32(b + p) != kCentralSig) fail(path, "corrupt central directory");
        const std::size_t nlen = le16(b + p + 28), xlen = le16(b + p + 30), clen = le16(b + p + 32);
        if (p + 46 + nlen + xlen + clen > cd_end) fail(path, "corrupt central directory");
        entries.push_back({le16(b + p + 8), le16(b + p + 10), le32(b + p + 16), le32(b + p + 20), le32(b + p + 24),
                           le32(b + p + 42), std::string(reinterpret_cast<const char*>(b + p + 46), nlen)});
        p += 46 + nlen + xlen + clen;
        const Entry& en = entries.back();
        if (double(en.usize) > kMaxEntryBytes)
            fail(path, "entry '" + en.fname + "' declares " + std::to_string(en.usize) + " bytes uncompressed (" +
                           gib(double(en.usize)) + "), more than the limit of " + gib(kMaxEntryBytes) +
                           " per array; no active set of a real potential is that large");
        total += double(en.usize);
        if (total > kMaxTotalBytes)
            fail(path, "the entries up to '" + en.fname + "' declare " + gib(total) +
                           " uncompressed, more than the limit of " + gib(kMaxTotalBytes) +
                           " per file; no active set of a real potential is that large");
    }

    std::map<std::string, NpyArray> out;
    for (const Entry& en : entries) {
        if (en.csize == 0xFFFFFFFFu || en.usize == 0xFFFFFFFFu || en.local == 0xFFFFFFFFu)
            fail(path, "entry '" + en.fname + "': zip64 entries are not supported");
        if (en.flags & 1u) fail(path, "entry '" + en.fname + "': encrypted entries are not supported");
        if (en.method != 0 && en.method != 8)
            fail(path, "entry '" + en.fname + "': compression method " + std::to_string(en.method) +
                           " is not supported (only stored and deflate)");
        if (en.local + 30 > size || le32(b + en.local) != kLocalSig)
            fail(path, "entry '" + en.fname + "': truncated or corrupt local header");
        const std::size_t data_off = en.local + 30 + le16(b + en.local + 26) + le16(b + en.local + 28);
        if (data_off > size || en.csize > size - data_off)
            fail(path, "entry '" + en.fname + "': truncated data");
        const unsigned char* src = b + data_off;

        std::vector<unsigned char> raw;
        if (en.method == 0) {
            if (en.csize != en.usize) fail(path, "entry '" + en.fname + "': stored sizes disagree");
            raw.assign(src, src + en.csize);
        } else {
            // deflate cannot expand data by more than ~1032x: refuse absurd declared sizes
            if (en.usize > en.csize * 1032 + 1024) fail(path, "entry '" + en.fname + "': implausible uncompressed size");
            raw = inflate_raw(src, en.csize, en.usize, path, en.fname);
        }
        const std::uint32_t got = std::uint32_t(crc32(0L, raw.data(), uInt(raw.size())));
        if (got != en.crc) fail(path, "entry '" + en.fname + "': CRC mismatch (corrupt data)");

        const std::string suffix = ".npy";
        if (en.fname.size() <= suffix.size() || en.fname.compare(en.fname.size() - suffix.size(), suffix.size(), suffix) != 0)
            fail(path, "entry '" + en.fname + "' is not a .npy array");
        const std::string key = en.fname.substr(0, en.fname.size() - suffix.size());
        if (out.count(key)) fail(path, "duplicate entry '" + en.fname + "'");
        out.emplace(key, parse_npy(path, en.fname, std::move(raw)));
    }
    return out;
}

}  // namespace aceuq
