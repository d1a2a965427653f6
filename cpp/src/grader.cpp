// Extrapolation grade against global (.asi) and clustered (.casi) active sets.
#include "aceuq/grader.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>

#include "aceuq/npz.hpp"

namespace aceuq {

namespace {

// ============================ a small JSON reader (for the .casi meta entry) ============================

struct Json {
    enum Type { Null, Bool, Number, String, Array, Object } type = Null;
    bool b = false;
    double num = 0;
    std::string str;
    std::vector<Json> arr;
    std::vector<std::pair<std::string, Json>> obj;

    const Json* get(const std::string& key) const {
        for (const auto& kv : obj)
            if (kv.first == key) return &kv.second;
        return nullptr;
    }
};

class JsonParser {
public:
    explicit JsonParser(const std::string& s) : s_(s) {}
    Json parse() {
        Json v = value(0);
        ws();
        if (i_ != s_.size()) error("trailing characters");
        return v;
    }

private:
    const std::string& s_;
    std::size_t i_ = 0;

    [[noreturn]] void error(const std::string& what) const {
        throw std::runtime_error(what + " at offset " + std::to_string(i_));
    }
    void ws() { while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_; }
    char peek() { ws(); return i_ < s_.size() ? s_[i_] : '\0'; }
    void expect(char c) {
        if (peek() != c) error(std::string("expected '") + c + "'");
        ++i_;
    }
    bool literal(const char* w) {
        const std::size_t n = std::strlen(w);
        if (s_.compare(i_, n, w) != 0) return false;
        i_ += n;
        return true;
    }

    Json value(int depth) {
        if (depth > 64) error("nesting too deep");
        Json v;
        const char c = peek();
        if (c == '{') {
            v.type = Json::Object;
            ++i_;
            if (peek() == '}') { ++i_; return v; }
            for (;;) {
                if (peek() != '"') error("expected a string key");
                std::string key = string();
                expect(':');
                v.obj.emplace_back(std::move(key), value(depth + 1));
                if (peek() == ',') { ++i_; continue; }
                expect('}');
                return v;
            }
        }
        if (c == '[') {
            v.type = Json::Array;
            ++i_;
            if (peek() == ']') { ++i_; return v; }
            for (;;) {
                v.arr.push_back(value(depth + 1));
                if (peek() == ',') { ++i_; continue; }
                expect(']');
                return v;
            }
        }
        if (c == '"') { v.type = Json::String; v.str = string(); return v; }
        if (literal("true")) { v.type = Json::Bool; v.b = true; return v; }
        if (literal("false")) { v.type = Json::Bool; return v; }
        if (literal("null")) return v;
        if (c == '-' || (c >= '0' && c <= '9')) { v.type = Json::Number; v.num = number(); return v; }
        error("unexpected character");
    }

    double number() {
        const std::size_t start = i_;
        if (s_[i_] == '-') ++i_;
        auto digits = [&] {
            const std::size_t d0 = i_;
            while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
            if (i_ == d0) error("malformed number");
        };
        digits();
        if (i_ < s_.size() && s_[i_] == '.') { ++i_; digits(); }
        if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
            ++i_;
            if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
            digits();
        }
        return std::strtod(s_.substr(start, i_ - start).c_str(), nullptr);
    }

    unsigned hex4() {
        if (i_ + 4 > s_.size()) error("truncated \\u escape");
        unsigned v = 0;
        for (int k = 0; k < 4; ++k) {
            const char h = s_[i_++];
            v <<= 4;
            if (h >= '0' && h <= '9') v |= unsigned(h - '0');
            else if (h >= 'a' && h <= 'f') v |= unsigned(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') v |= unsigned(h - 'A' + 10);
            else error("malformed \\u escape");
        }
        return v;
    }

    std::string string() {
        expect('"');
        std::string out;
        for (;;) {
            if (i_ >= s_.size()) error("unterminated string");
            const char c = s_[i_++];
            if (c == '"') return out;
            if ((unsigned char)c < 0x20) error("control character in string");
            if (c != '\\') { out += c; continue; }
            if (i_ >= s_.size()) error("unterminated string");
            const char e = s_[i_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned cp = hex4();
                    if (cp >= 0xD800 && cp < 0xDC00) {
                        if (!literal("\\u")) error("lone surrogate");
                        const unsigned lo = hex4();
                        if (lo < 0xDC00 || lo >= 0xE000) error("lone surrogate");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    if (cp < 0x80) out += char(cp);
                    else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
                    else if (cp < 0x10000) {
                        out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F));
                    } else {
                        out += char(0xF0 | (cp >> 18)); out += char(0x80 | ((cp >> 12) & 0x3F));
                        out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F));
                    }
                    break;
                }
                default: error("unknown escape");
            }
        }
    }
};

// ============================ kernels ============================
//
// C[rows][m] = Z[rows][n] . M[n][m] over blocks of kBlock atoms, in groups of kRows rows: the
// micro kernel broadcasts one value of each of the kRows rows and multiplies them into kCols
// contiguous columns of M, a kRows x kCols accumulator tile in vector registers (6 x 8: 12 of the
// 16 AVX2 registers, enough independent FMA chains to hide their latency). Rows are read in place
// through pointers (kRows sequential streams), so the projections are not copied into a panel.
// M is stored as column panels ([m / kCols][n][kCols], see pack_panels): one panel is a single
// contiguous stream, reused from cache by all row groups of the block. Read from a row-major M
// instead (lines 8 * m bytes apart, which share few cache sets) the kernel is a quarter slower at
// n = 300.

constexpr int kRows = 6;
constexpr int kCols = 8;
constexpr int kBlock = 96;

int pad_cols(int m) { return (m + kCols - 1) / kCols * kCols; }

// Column panels of the n x m matrix whose element (k, j) is A[k * row_step + j * col_step],
// zero-padded to pad_cols(m) columns (zero columns change no product and no max |.|).
Panels pack_panels(const double* A, int n, int m, std::size_t row_step, std::size_t col_step) {
    Panels out(std::size_t(n) * pad_cols(m), 0.0);
    for (int k = 0; k < n; ++k)
        for (int j = 0; j < m; ++j)
            out[(std::size_t(j / kCols) * n + k) * kCols + j % kCols] = A[k * row_step + j * col_step];
    return out;
}

// Vectors of doubles (GCC/Clang vector extension). The tile is written with them because GCC
// auto-vectorised the same loops over plain arrays into shuffle-heavy code at two thirds of the
// FMA throughput (n = 300: 17 instead of 28 GFMA/s). Four-wide where the CPU has AVX2 and FMA,
// two-wide elsewhere: a vector wider than the target's registers is kept in memory (0.5 GFMA/s
// under SSE2).
typedef double Vec2 __attribute__((vector_size(16)));
typedef double Vec4 __attribute__((vector_size(32)));

// One R x kCols tile: rows P[0..R) times the kCols columns of the panel Mj; written to C (kMaxAbs
// false: rows of mpad values, from column j0) or folded into the running lane-wise maxima hi and
// minima lo of its rows (kMaxAbs; NaN sticks in the maximum: a broken projection must not look
// safe).
template <class Vec, bool kMaxAbs, int R>
inline __attribute__((always_inline)) void tile(const double* const* P, int n, const double* __restrict Mj,
                                                Vec* hi, Vec* lo, double* __restrict C, int mpad, int j0) {
    constexpr int W = sizeof(Vec) / sizeof(double), kVecs = kCols / W;
    // element-wise loads and stores, which the compiler merges into vector moves (memcpy of the
    // arrays made GCC keep the accumulators in memory)
    Vec acc[R][kVecs] = {};
    for (int k = 0; k < n; ++k) {
        const double* row = Mj + std::size_t(k) * kCols;
        Vec a[kVecs];
        for (int v = 0; v < kVecs; ++v)
            for (int l = 0; l < W; ++l) a[v][l] = row[v * W + l];
        for (int r = 0; r < R; ++r)
            for (int v = 0; v < kVecs; ++v) acc[r][v] += P[r][k] * a[v];
    }
    for (int r = 0; r < R; ++r) {
        if constexpr (kMaxAbs) {
            for (int v = 0; v < kVecs; ++v) {
                const Vec c = acc[r][v];
                hi[r] = ((c > hi[r]) | (c != c)) ? c : hi[r];
                lo[r] = c < lo[r] ? c : lo[r];
            }
        } else {
            double* out = C + std::size_t(r) * mpad + j0;
            for (int v = 0; v < kVecs; ++v)
                for (int l = 0; l < W; ++l) out[v * W + l] = acc[r][v][l];
        }
    }
}

// The rows of the next block, fetched into L2 a few at a time while this block is multiplied:
// the first pass over a block (one panel) is otherwise bound by memory bandwidth when the
// projections no longer fit in cache (4000 atoms: 9.6 MB at n = 300).
struct Prefetch {
    const double* const* rows;
    int nrows;
    int len;  // values per row to fetch
};

// rows[t]: row t (n values) of a block of nrows <= kBlock rows, in groups of kRows and a last
// group of the nrows % kRows rows left (a kernel of that height: padding them to kRows with
// zero rows cost up to a twentieth of the grading when a rank's atoms split into eight
// clusters). With kMaxAbs only max_j |C[t][j]| is kept, in C[t]: each finished tile is folded
// into running maxima and minima of its rows, so the block of C (kBlock x m, 230 kB at n = 300)
// is never written and read back, and the block's projections and the inverse have the L2 cache
// to themselves. (A scalar max over a row of C is one long dependency chain, as slow as a tenth
// of the product at n = 300.)
template <class Vec, bool kMaxAbs>
inline __attribute__((always_inline)) void block_product_vec(const double* const* rows, int nrows, int n,
                                                             const double* __restrict M, int mpad,
                                                             double* __restrict C, const Prefetch& next) {
    constexpr int W = sizeof(Vec) / sizeof(double);
    Vec hi[kMaxAbs ? kBlock : 1], lo[kMaxAbs ? kBlock : 1];
    if (kMaxAbs)
        for (int t = 0; t < nrows; ++t) hi[t] = lo[t] = Vec{};
    const int full = nrows / kRows * kRows;
    const int panels = mpad / kCols;
    for (int j0 = 0; j0 < mpad; j0 += kCols) {
        const double* Mj = M + std::size_t(j0) * n;
        const int p = j0 / kCols;
        for (int r = p * next.nrows / panels; r < (p + 1) * next.nrows / panels; ++r)
            for (int i = 0; i < next.len; i += 8) __builtin_prefetch(next.rows[r] + i, 0, 2);  // 64-byte lines
        // where the tile of rows from t goes: C rows, or the running extrema
        auto at = [&](int t) {
            return kMaxAbs ? std::make_tuple(hi + t, lo + t, C) : std::make_tuple(hi, lo, C + std::size_t(t) * mpad);
        };
        for (int t = 0; t < full; t += kRows) {
            const auto [h, l, c] = at(t);
            tile<Vec, kMaxAbs, kRows>(rows + t, n, Mj, h, l, c, mpad, j0);
        }
        const auto [h, l, c] = at(full);
        const double* const* tail = rows + full;
        static_assert(kRows == 6, "one case per remainder");
        switch (nrows - full) {
            case 1: tile<Vec, kMaxAbs, 1>(tail, n, Mj, h, l, c, mpad, j0); break;
            case 2: tile<Vec, kMaxAbs, 2>(tail, n, Mj, h, l, c, mpad, j0); break;
            case 3: tile<Vec, kMaxAbs, 3>(tail, n, Mj, h, l, c, mpad, j0); break;
            case 4: tile<Vec, kMaxAbs, 4>(tail, n, Mj, h, l, c, mpad, j0); break;
            case 5: tile<Vec, kMaxAbs, 5>(tail, n, Mj, h, l, c, mpad, j0); break;
            default: break;
        }
    }
    if constexpr (kMaxAbs)
        for (int t = 0; t < nrows; ++t) {
            double gmax = 0.0;
            for (int l = 0; l < W; ++l) {
                if (hi[t][l] != hi[t][l]) {
                    gmax = std::numeric_limits<double>::quiet_NaN();
                    break;
                }
                gmax = std::max({gmax, hi[t][l], -lo[t][l]});
            }
            C[t] = gmax;
        }
}

#if defined(__GNUC__) && defined(__x86_64__)
#define ACEUQ_AVX2_DISPATCH
__attribute__((target("avx2,fma"))) void block_product_avx2(const double* const* rows, int nrows, int n,
                                                             const double* M, int mpad, double* C,
                                                             const Prefetch& next) {
    block_product_vec<Vec4, false>(rows, nrows, n, M, mpad, C, next);
}
__attribute__((target("avx2,fma"))) void block_max_abs_avx2(const double* const* rows, int nrows, int n,
                                                             const double* M, int mpad, double* C,
                                                             const Prefetch& next) {
    block_product_vec<Vec4, true>(rows, nrows, n, M, mpad, C, next);
}

// one portable build: the four-wide kernels where the CPU has them and the environment does not
// ask for the generic ones (checked once)
bool use_avx2() {
    static const bool yes = [] {
        const char* forced = std::getenv("ACEUQ_GRADER_KERNEL");
        if (forced && std::string(forced) == "generic") return false;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return yes;
}
#endif

}  // namespace

const char* grader_kernel() {
#ifdef ACEUQ_AVX2_DISPATCH
    if (use_avx2()) return "avx2+fma";
#endif
    return "generic";
}

namespace {

// C = Z . M (kMaxAbs false: C rows of mpad values) or max_j |(Z . M)[t][j]| (kMaxAbs: C[t])
template <bool kMaxAbs>
void block_product(const double* const* rows, int nrows, int n, const double* M, int mpad, double* C,
                   const Prefetch& next) {
#ifdef ACEUQ_AVX2_DISPATCH
    if (use_avx2()) return (kMaxAbs ? block_max_abs_avx2 : block_product_avx2)(rows, nrows, n, M, mpad, C, next);
#endif
    block_product_vec<Vec2, kMaxAbs>(rows, nrows, n, M, mpad, C, next);
}

// Runs C = Z . M over `count` rows of proj (row t is proj[(idx ? idx[t] : t) * stride]), with
// Z = b when cols is null, else Z_i = b[cols[i]] (i < n); calls epilogue(t, C row) per row, where
// with kMaxAbs the "row" is the one value max_j |C[t][j]|.
template <bool kMaxAbs, class Epilogue>
void product_rows(const double* M, int n, int mpad, int count, const double* proj, int stride, const int* idx,
                  const int* cols, Epilogue&& epilogue) {
    // scratch kept from call to call (allocating and zeroing a block of products on every call
    // cost as much as grading 30 atoms at n = 300)
    thread_local std::vector<double> C, z;
    thread_local std::vector<const double*> rows;
    const std::size_t c_width = kMaxAbs ? 1 : std::size_t(mpad);
    if (C.size() < kBlock * c_width) C.resize(kBlock * c_width);
    if (cols) z.resize(std::size_t(kBlock) * n);
    rows.resize(2 * kBlock);  // this block's rows, then the next block's sources (to prefetch)
    auto source = [&](int t) { return proj + std::size_t(idx ? idx[t] : t) * std::size_t(stride); };
    for (int b0 = 0; b0 < count; b0 += kBlock) {
        const int nrows = std::min(kBlock, count - b0);
        for (int t = 0; t < nrows; ++t) {
            const double* src = source(b0 + t);
            if (cols) {
                double* dst = z.data() + std::size_t(t) * n;
                for (int i = 0; i < n; ++i) dst[i] = src[cols[i]];
                src = dst;
            }
            rows[t] = src;
        }
        const int next_rows = std::max(0, std::min(kBlock, count - b0 - kBlock));
        for (int t = 0; t < next_rows; ++t) rows[kBlock + t] = source(b0 + kBlock + t);
        block_product<kMaxAbs>(rows.data(), nrows, n, M, mpad, C.data(),
                               Prefetch{rows.data() + kBlock, next_rows, cols ? stride : n});
        for (int t = 0; t < nrows; ++t) epilogue(b0 + t, C.data() + std::size_t(t) * c_width);
    }
}

// gamma of rows against one (padded) inverse
void gamma_rows(const Panels& inv, int n, int npad, int count, const double* proj, int stride,
                const int* idx, double* gamma) {
    product_rows<true>(inv.data(), n, npad, count, proj, stride, idx, nullptr,
                       [&](int t, const double* g) { gamma[t] = *g; });
}

// ============================ loading ============================

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
}

std::string shape_str(const std::vector<std::size_t>& shape) {
    std::string s = "(";
    for (std::size_t k = 0; k < shape.size(); ++k) s += (k ? ", " : "") + std::to_string(shape[k]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

struct Loader {
    std::string path;
    const Potential& pot;
    std::map<std::string, NpyArray> npz;

    [[noreturn]] void fail(const std::string& what) const {
        throw InputError("active set '" + path + "': " + what);
    }

    // Numeric array of exactly `shape`, all finite, as doubles in C order.
    std::vector<double> numbers(const std::string& key, const std::vector<std::size_t>& shape) const {
        const NpyArray& a = npz.at(key);
        const char kind = a.dtype.size() > 1 ? a.dtype[1] : '?';
        if (kind != 'f' && kind != 'i' && kind != 'u') fail("array '" + key + "' has non-numeric dtype '" + a.dtype + "'");
        if (a.shape != shape)
            fail("array '" + key + "' has shape " + shape_str(a.shape) + ", expected " + shape_str(shape));
        std::vector<double> v = a.as_double();
        for (double x : v)
            if (!std::isfinite(x)) fail("array '" + key + "' contains NaN or infinite values");
        return v;
    }

    // The inverse of an active-set matrix (n x n): finite, and no column is zero (an invertible
    // matrix has none), which a truncated or zeroed file would otherwise pass off as gamma = 0.
    std::vector<double> inverse(const std::string& key, std::size_t n) const {
        std::vector<double> v = numbers(key, {n, n});
        for (std::size_t j = 0; j < n; ++j) {
            bool zero = true;
            for (std::size_t i = 0; i < n && zero; ++i) zero = v[i * n + j] == 0.0;
            if (zero)
                fail("array '" + key + "' has an all-zero column " + std::to_string(j) +
                     ": not the inverse of an active-set matrix");
        }
        return v;
    }

    // A square matrix; returns its width.
    std::size_t square_width(const std::string& key) const {
        const NpyArray& a = npz.at(key);
        if (a.shape.size() != 2 || a.shape[0] != a.shape[1] || a.shape[0] == 0)
            fail("array '" + key + "' has shape " + shape_str(a.shape) + ", expected a non-empty square matrix");
        return a.shape[0];
    }

    void check_elements(const std::set<std::string>& present, const std::string& what) const {
        std::vector<std::string> missing, unknown;
        for (const auto& el : pot.elements())
            if (!present.count(el)) missing.push_back(el);
        for (const auto& el : present)
            if (pot.element_index(el) < 0) unknown.push_back(el);
        if (!unknown.empty())
            fail(what + " element(s) " + join(unknown) + " that the potential '" + pot.path() + "' does not have (it has " +
                 join(pot.elements()) + ")");
        if (!missing.empty())
            fail("no active set for element(s) " + join(missing) + " of the potential '" + pot.path() + "'");
    }
};

}  // namespace

void Grader::pack(int mu) {
    const ElementActiveSet& s = sets_[mu];
    Packed& p = packed_[mu];
    const int n = s.n_proj;
    p.n_pad = pad_cols(n);
    p.inv.clear();
    for (int c = 0; c < s.k; ++c) p.inv.push_back(pack_panels(s.inv[c].data(), n, n, n, 1));
    // The assignment reads only the projections the components use (a .casi may cluster on a
    // subset of the functions, with zero components elsewhere): the others add exact zeros.
    p.used.clear();
    p.kappa.assign(s.k, 0.0);
    p.k_pad = 0;
    p.v.clear();
    if (s.dim == 0) return;
    std::vector<double> v;  // [used][k]
    for (int i = 0; i < n; ++i) {
        bool any = false;
        for (int d = 0; d < s.dim; ++d) any = any || s.components[std::size_t(d) * n + i] != 0.0;
        if (!any) continue;
        p.used.push_back(i);
        for (int c = 0; c < s.k; ++c) {
            double w = 0.0;
            for (int d = 0; d < s.dim; ++d) w += s.components[std::size_t(d) * n + i] * s.centers[std::size_t(c) * s.dim + d];
            w /= s.scale[i];
            v.push_back(w);
            p.kappa[c] += 2.0 * s.mean[i] * w;
        }
    }
    for (int c = 0; c < s.k; ++c)
        for (int d = 0; d < s.dim; ++d) p.kappa[c] += s.centers[std::size_t(c) * s.dim + d] * s.centers[std::size_t(c) * s.dim + d];
    p.k_pad = pad_cols(s.k);
    p.v = pack_panels(v.data(), int(p.used.size()), s.k, s.k, 1);
}

std::shared_ptr<Grader> Grader::load(const std::string& path, const Potential& potential) {
    Loader L{path, potential, read_npz(path)};
    auto g = std::make_shared<Grader>();
    const int nel = potential.nelements();
    g->sets_.assign(nel, ElementActiveSet{});
    g->packed_.assign(nel, Packed{});

    auto meta_it = L.npz.find("meta");
    if (meta_it == L.npz.end()) {
        // ---- pacemaker .asi: one square inverse per element, keyed by element name ----
        std::set<std::string> present;
        for (const auto& kv : L.npz) present.insert(kv.first);
        L.check_elements(present, "has arrays for");
        int decided = -1;  // 0 linear, 1 full
        for (int mu = 0; mu < nel; ++mu) {
            const std::string& el = potential.elements()[mu];
            const std::size_t w = L.square_width(el);
            const int nf = potential.n_projections(mu, false), nfull = potential.n_projections(mu, true);
            int full;
            if (w == std::size_t(nf)) full = 0;  // ndensity 1: both coincide, and both mean linear (as pyace)
            else if (w == std::size_t(nfull)) full = 1;
            else
                L.fail("array '" + el + "' is " + std::to_string(w) + "x" + std::to_string(w) + ", expected " +
                       std::to_string(nf) + " (linear) or " + std::to_string(nfull) + " (full) for element " + el +
                       " of the potential '" + potential.path() + "'; built for another potential?");
            if (decided >= 0 && decided != full)
                L.fail("elements disagree on linear vs full projections (array widths)");
            decided = full;
        }
        g->full_ = decided == 1;
        for (int mu = 0; mu < nel; ++mu) {
            const std::string& el = potential.elements()[mu];
            ElementActiveSet& s = g->sets_[mu];
            s.n_proj = potential.n_projections(mu, g->full_);
            s.k = 1;
            s.inv.push_back(L.inverse(el, std::size_t(s.n_proj)));
            g->pack(mu);
        }
        return g;
    }

    // ---- aceuq .casi ----
    Json meta;
    {
        const NpyArray& m = meta_it->second;
        if (m.shape.size() > 1 || (m.dtype != "|u1" && (m.dtype.size() < 2 || m.dtype[1] != 'S')))
            L.fail("entry 'meta' must be a 1-D uint8 array of UTF-8 JSON text");
        try {
            meta = JsonParser(m.as_text()).parse();
        } catch (const std::runtime_error& e) {
            L.fail(std::string("entry 'meta' is not valid JSON: ") + e.what());
        }
    }
    if (meta.type != Json::Object) L.fail("entry 'meta' is not a JSON object");
    auto str_field = [&](const char* key, bool required) -> std::string {
        const Json* v = meta.get(key);
        if (!v) {
            if (required) L.fail(std::string("meta lacks '") + key + "'");
            return {};
        }
        if (v->type != Json::String) L.fail(std::string("meta '") + key + "' is not a string");
        return v->str;
    };
    auto int_map = [&](const char* key) {
        std::map<std::string, long> out;
        const Json* v = meta.get(key);
        if (!v) return out;
        if (v->type != Json::Object) L.fail(std::string("meta '") + key + "' is not an object");
        for (const auto& kv : v->obj) {
            if (kv.second.type != Json::Number || kv.second.num != std::floor(kv.second.num) || kv.second.num < 0 ||
                kv.second.num > 1e9)
                L.fail(std::string("meta '") + key + "' of " + kv.first + " is not a non-negative integer");
            out[kv.first] = long(kv.second.num);
        }
        return out;
    };

    if (str_field("format", true) != "aceuq.casi") L.fail("meta 'format' is not 'aceuq.casi'");
    {
        const Json* v = meta.get("version");
        if (!v || v->type != Json::Number) L.fail("meta lacks a numeric 'version'");
        if (v->num != 1) L.fail("unsupported .casi version " + std::to_string(v->num) + " (this aceuq reads version 1)");
    }
    const std::string mode = str_field("mode", true);
    if (mode != "linear" && mode != "full") L.fail("meta 'mode' must be 'linear' or 'full', got '" + mode + "'");
    g->full_ = mode == "full";
    // full projections (dE/dc) depend on the coefficients too, linear ones only on the basis
    const std::string fp = str_field("fingerprint", true), own = potential.fingerprint(g->full_);
    if (fp != own)
        L.fail("built for another potential (" + std::string(g->full_ ? "full mode: basis and coefficients" : "basis") +
               " fingerprint " + fp + ", potential '" + potential.path() + "' has " + own +
               "), or by an earlier aceuq, whose fingerprints differ: build it again for this potential (aceuq "
               "activeset)");
    const std::string assign = str_field("assign", false);
    if (assign == "min") g->assign_ = Assign::Min;
    else if (assign.empty() || assign == "nearest") g->assign_ = Assign::Nearest;
    else L.fail("meta 'assign' must be 'nearest' or 'min', got '" + assign + "'");

    std::set<std::string> meta_elements;
    {
        const Json* v = meta.get("elements");
        if (!v || v->type != Json::Array) L.fail("meta lacks an 'elements' list");
        for (const auto& e : v->arr) {
            if (e.type != Json::String) L.fail("meta 'elements' holds a non-string");
            meta_elements.insert(e.str);
        }
    }
    L.check_elements(meta_elements, "lists");
    const auto clusters = int_map("clusters");
    const auto n_projections = int_map("n_projections");

    // every array must belong to a known element and be one of the known parts
    std::map<std::string, std::set<long>> inv_ids;
    for (const auto& kv : L.npz) {
        const std::string& key = kv.first;
        if (key == "meta") continue;
        const auto slash = key.find('/');
        const std::string el = key.substr(0, slash);
        if (slash == std::string::npos || potential.element_index(el) < 0)
            L.fail("unexpected array '" + key + "' (not an element of the potential '" + potential.path() + "')");
        const std::string part = key.substr(slash + 1);
        if (part == "centers" || part == "mean" || part == "scale" || part == "components") continue;
        // inv/<cluster>, the number as written ("inv/01" is not inv/1: a file could hold both)
        if (part.compare(0, 4, "inv/") == 0 && part.size() > 4 && part.size() < 10 &&
            part.find_first_not_of("0123456789", 4) == std::string::npos && (part.size() == 5 || part[4] != '0')) {
            inv_ids[el].insert(std::stol(part.substr(4)));
            continue;
        }
        L.fail("unexpected array '" + key + "'");
    }

    for (int mu = 0; mu < nel; ++mu) {
        const std::string& el = potential.elements()[mu];
        ElementActiveSet& s = g->sets_[mu];
        s.n_proj = potential.n_projections(mu, g->full_);
        const std::size_t n = std::size_t(s.n_proj);
        auto np_it = n_projections.find(el);
        if (np_it != n_projections.end() && np_it->second != s.n_proj)
            L.fail("meta gives " + std::to_string(np_it->second) + " projections for " + el + ", the potential has " +
                   std::to_string(s.n_proj) + " (" + mode + "); built for another potential?");
        const auto& ids = inv_ids[el];
        auto cl_it = clusters.find(el);
        const long k = cl_it != clusters.end() ? cl_it->second : long(ids.size());
        if (k < 1) L.fail("element " + el + " has no inverse (expected arrays '" + el + "/inv/0' ...)");
        for (long c = 0; c < k; ++c)
            if (!ids.count(c)) L.fail("array '" + el + "/inv/" + std::to_string(c) + "' is missing (" + std::to_string(k) + " clusters)");
        if (long(ids.size()) != k)
            L.fail("element " + el + " has " + std::to_string(ids.size()) + " inverses but meta says " + std::to_string(k) + " clusters");
        s.k = int(k);
        for (long c = 0; c < k; ++c) {
            const std::string key = el + "/inv/" + std::to_string(c);
            if (L.square_width(key) != n)
                L.fail("array '" + key + "' has width " + std::to_string(L.square_width(key)) + ", expected " +
                       std::to_string(n) + " (" + mode + " projections of " + el + ")");
            s.inv.push_back(L.inverse(key, n));
        }

        const char* parts[] = {"centers", "mean", "scale", "components"};
        int have = 0;
        for (const char* p : parts) have += L.npz.count(el + "/" + p) ? 1 : 0;
        if (have == 0 && k == 1) { g->pack(mu); continue; }
        if (have != 4)
            L.fail("element " + el + " needs '" + el + "/centers', '/mean', '/scale' and '/components' (" + std::to_string(k) +
                   " clusters)");
        const NpyArray& comp = L.npz.at(el + "/components");
        if (comp.shape.size() != 2 || comp.shape[0] == 0)
            L.fail("array '" + el + "/components' has shape " + shape_str(comp.shape) + ", expected (dim, " +
                   std::to_string(n) + ")");
        const std::size_t dim = comp.shape[0];
        s.dim = int(dim);
        s.components = L.numbers(el + "/components", {dim, n});
        s.centers = L.numbers(el + "/centers", {std::size_t(k), dim});
        s.mean = L.numbers(el + "/mean", {n});
        s.scale = L.numbers(el + "/scale", {n});
        for (double x : s.scale)
            if (x == 0.0) L.fail("array '" + el + "/scale' contains zeros");
        g->pack(mu);
    }
    return g;
}

void Grader::assign_nearest(int mu, int n, const double* proj, int stride, int* cluster) const {
    const Packed& p = packed_[mu];
    const int k = sets_[mu].k;
    product_rows<false>(p.v.data(), int(p.used.size()), p.k_pad, n, proj, stride, nullptr, p.used.data(),
                 [&](int t, const double* bv) {
                     int best = 0;
                     double best_d = std::numeric_limits<double>::infinity();
                     for (int c = 0; c < k; ++c) {
                         const double d = p.kappa[c] - 2.0 * bv[c];  // |T(b) - c|^2 - |T(b)|^2
                         if (d < best_d) { best_d = d; best = c; }
                     }
                     cluster[t] = best;
                 });
}

void Grader::grade(int mu, int n, const double* proj, int stride, double* gamma, int* cluster) const {
    if (!has_element(mu)) throw std::out_of_range("Grader::grade: no active set for element index " + std::to_string(mu));
    const ElementActiveSet& s = sets_[mu];
    const Packed& p = packed_[mu];
    if (n <= 0) return;
    if (stride < s.n_proj) throw std::invalid_argument("Grader::grade: row stride smaller than the projection width");
    if (s.k == 1) {
        gamma_rows(p.inv[0], s.n_proj, p.n_pad, n, proj, stride, nullptr, gamma);
        std::fill_n(cluster, n, 0);
        return;
    }
    if (assign_ == Assign::Nearest) {
        assign_nearest(mu, n, proj, stride, cluster);
        std::vector<std::vector<int>> members(s.k);
        for (int i = 0; i < n; ++i) members[cluster[i]].push_back(i);
        std::vector<double> g;
        for (int c = 0; c < s.k; ++c) {
            const auto& idx = members[c];
            if (idx.empty()) continue;
            g.resize(idx.size());
            gamma_rows(p.inv[c], s.n_proj, p.n_pad, int(idx.size()), proj, stride, idx.data(), g.data());
            for (std::size_t t = 0; t < idx.size(); ++t) gamma[idx[t]] = g[t];
        }
        return;
    }
    // Min: grade under every cluster, keep the smallest (first on ties)
    gamma_rows(p.inv[0], s.n_proj, p.n_pad, n, proj, stride, nullptr, gamma);
    std::fill_n(cluster, n, 0);
    std::vector<double> g(n);
    for (int c = 1; c < s.k; ++c) {
        gamma_rows(p.inv[c], s.n_proj, p.n_pad, n, proj, stride, nullptr, g.data());
        for (int i = 0; i < n; ++i)
            if (g[i] < gamma[i]) { gamma[i] = g[i]; cluster[i] = c; }
    }
}

}  // namespace aceuq
