// O(N) neighbour search with cell lists (binning), for periodic, mixed and open boundaries.
//
// Outline:
//  1. Build a full 3x3 basis B: periodic directions keep their lattice vector; each open
//     direction gets a unit vector completing the span (so an open cell vector may be zero or
//     anything). Fractional coordinates are s = r B^{-1}.
//  2. Periodic fractional coordinates are wrapped into [0, 1): p_i = r_i - w_i.B with integer
//     w_i; open ones are binned over the atoms' bounding range.
//  3. Along every direction the bins are at least cutoff/2 thick (perpendicular width), so the
//     search runs over +-m = +-2 bins; if a periodic cell is thinner than that, it has one bin
//     and the search runs over m = ceil(cutoff / thickness) images. The bin count is capped
//     at O(n) for sparse systems (bins then only get thicker).
//  4. For each atom, visit the (2m+1)^3 stencil of bins (periodic bins wrap and carry an image
//     shift k) and report dvec = p_j + k.B - p_i = r_j - r_i + (k + w_i - w_j).B, i.e. the input
//     (unwrapped) positions plus an integer lattice translation, up to rounding.
#include "aceuq/neighbors.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace aceuq {
namespace {

// Relative safety margin on bin thickness, so that rounding in the fractional coordinates
// cannot put a pair just inside the cutoff outside the searched stencil.
constexpr double kMargin = 1e-9;
// Below these, a periodic structure is not matter: thinner than 0.1 A along a lattice direction
// (each atom that close to its own images), or denser than 10^5 neighbours per atom within the
// cutoff (over a hundred times diamond at a 10 A cutoff).
constexpr double kMinThickness = 0.1;
constexpr double kMaxNeighbours = 1e5;
// Bins per cutoff length (bin thickness >= cutoff / kSub).
constexpr long kSub = 2;

struct Vec3 {
    double x, y, z;
};

inline Vec3 cross(const double* a, const double* b) {
    return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
inline double norm3(const double* a) { return std::sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2]); }

inline long floor_div(long a, long b) {  // b > 0
    long q = a / b;
    if (q * b > a) --q;
    return q;
}

struct SortedAtom {  // an atom's wrapped position, stored contiguously per bin
    double x, y, z;
    int id;
};

}  // namespace

NeighborList build_neighbor_list(int n, const double* positions, const double* cell,
                                 const bool* pbc, double cutoff) {
    if (n < 0) throw std::invalid_argument("neighbor_list: negative number of atoms");
    if (!std::isfinite(cutoff) || !(cutoff > 0.0))
        throw std::invalid_argument("neighbor_list: cutoff must be positive and finite, got " +
                                    std::to_string(cutoff));
    if (n > 0 && positions == nullptr)
        throw std::invalid_argument("neighbor_list: positions is null");
    for (int i = 0; i < n; ++i)
        for (int d = 0; d < 3; ++d)
            if (!std::isfinite(positions[3 * i + d]))
                throw std::invalid_argument("neighbor_list: non-finite position of atom " +
                                            std::to_string(i));

    bool per[3];
    for (int d = 0; d < 3; ++d) per[d] = pbc != nullptr && pbc[d];
    if ((per[0] || per[1] || per[2]) && cell == nullptr)
        throw std::invalid_argument("neighbor_list: cell is null but pbc is set");

    // ---- 1. basis -----------------------------------------------------------------------
    double B[3][3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
    int pdirs[3], odirs[3], np = 0, no = 0;
    for (int d = 0; d < 3; ++d) {
        if (per[d]) {
            for (int k = 0; k < 3; ++k) {
                B[d][k] = cell[3 * d + k];
                if (!std::isfinite(B[d][k]))
                    throw std::invalid_argument("neighbor_list: non-finite cell vector " +
                                                std::to_string(d) + " in a periodic direction");
            }
            pdirs[np++] = d;
        } else {
            odirs[no++] = d;
        }
    }
    const double tol = 1e-10;
    const char* singular = "neighbor_list: singular (degenerate) cell in the periodic directions";
    if (np == 3) {
        Vec3 c = cross(B[1], B[2]);
        double det = B[0][0] * c.x + B[0][1] * c.y + B[0][2] * c.z;
        if (!(std::fabs(det) > tol * norm3(B[0]) * norm3(B[1]) * norm3(B[2])))
            throw std::invalid_argument(singular);
    } else if (np == 2) {
        const double* a = B[pdirs[0]];
        const double* b = B[pdirs[1]];
        Vec3 c = cross(a, b);
        double cn = std::sqrt(c.x * c.x + c.y * c.y + c.z * c.z);
        if (!(cn > tol * norm3(a) * norm3(b))) throw std::invalid_argument(singular);
        double* o = B[odirs[0]];
        o[0] = c.x / cn;
        o[1] = c.y / cn;
        o[2] = c.z / cn;
    } else if (np == 1) {
        const double* a = B[pdirs[0]];
        double an = norm3(a);
        if (!(an > 0.0)) throw std::invalid_argument(singular);
        // helper axis: the Cartesian axis least aligned with a
        int ax = 0;
        for (int k = 1; k < 3; ++k)
            if (std::fabs(a[k]) < std::fabs(a[ax])) ax = k;
        double e[3] = {0, 0, 0};
        e[ax] = 1.0;
        Vec3 u = cross(a, e);
        double un = std::sqrt(u.x * u.x + u.y * u.y + u.z * u.z);
        double* o1 = B[odirs[0]];
        o1[0] = u.x / un;
        o1[1] = u.y / un;
        o1[2] = u.z / un;
        Vec3 v = cross(a, o1);
        double vn = std::sqrt(v.x * v.x + v.y * v.y + v.z * v.z);
        double* o2 = B[odirs[1]];
        o2[0] = v.x / vn;
        o2[1] = v.y / vn;
        o2[2] = v.z / vn;
    } else {
        for (int d = 0; d < 3; ++d) B[d][d] = 1.0;
    }

    // inverse: Binv[k][d] = (column d is the reciprocal vector g_d, with a_e . g_d = delta_ed)
    double Binv[3][3];
    double det;  // of the basis: the cell's volume when all three directions are periodic
    {
        Vec3 c0 = cross(B[1], B[2]), c1 = cross(B[2], B[0]), c2 = cross(B[0], B[1]);
        det = B[0][0] * c0.x + B[0][1] * c0.y + B[0][2] * c0.z;
        const Vec3 g[3] = {c0, c1, c2};
        for (int d = 0; d < 3; ++d) {
            Binv[0][d] = g[d].x / det;
            Binv[1][d] = g[d].y / det;
            Binv[2][d] = g[d].z / det;
        }
    }
    double h[3];  // perpendicular thickness of the (basis) cell along each direction
    for (int d = 0; d < 3; ++d)
        h[d] = 1.0 / std::sqrt(Binv[0][d] * Binv[0][d] + Binv[1][d] * Binv[1][d] +
                               Binv[2][d] * Binv[2][d]);
    // A periodic cell so thin, or so crowded, that atoms sit closer to each other (or to their own
    // images) than matter allows would have gigabytes of neighbours listed before the evaluator
    // refuses the distances: refused here. (In the open directions the extent is the atoms' own.)
    for (int d = 0; d < 3; ++d)
        if (per[d] && h[d] < kMinThickness)
            throw std::invalid_argument("neighbor_list: the periodic cell is " + std::to_string(h[d]) +
                                        " A thick along lattice vector " + std::to_string(d + 1) +
                                        ": every atom is that close to its own periodic images (atoms too close)");
    if (np == 3 && cutoff > 0.0) {
        const double volume = std::fabs(det);
        const double per_atom = n / volume * 4.0 / 3.0 * M_PI * cutoff * cutoff * cutoff;
        if (per_atom > kMaxNeighbours)
            throw std::invalid_argument("neighbor_list: " + std::to_string(n) + " atoms in a periodic cell of " +
                                        std::to_string(volume) + " A^3 would have about " +
                                        std::to_string(static_cast<long long>(per_atom)) +
                                        " neighbours each within the cutoff, far denser than matter "
                                        "(atoms too close, or a cell in the wrong units?)");
    }

    // ---- 2. fractional coordinates, wrapping ----------------------------------------------
    std::vector<double> frac(3 * static_cast<std::size_t>(n));
    std::vector<double> wpos(3 * static_cast<std::size_t>(n));
    double lo[3] = {0, 0, 0}, hi[3] = {0, 0, 0};
    for (int d = 0; d < 3; ++d) {
        lo[d] = n > 0 ? INFINITY : 0.0;
        hi[d] = n > 0 ? -INFINITY : 0.0;
    }
    for (int i = 0; i < n; ++i) {
        const double* r = positions + 3 * i;
        double* s = &frac[3 * i];
        for (int d = 0; d < 3; ++d) s[d] = r[0] * Binv[0][d] + r[1] * Binv[1][d] + r[2] * Binv[2][d];
        double w[3] = {0, 0, 0};
        for (int d = 0; d < 3; ++d) {
            if (per[d]) {
                double f = std::floor(s[d]);
                if (!(std::fabs(f) < 1e9))
                    throw std::invalid_argument("neighbor_list: atom " + std::to_string(i) +
                                                " is too far outside the periodic cell");
                s[d] -= f;
                if (s[d] >= 1.0) {  // rounding of e.g. -1e-17 + 1
                    s[d] -= 1.0;
                    f += 1.0;
                }
                if (s[d] < 0.0) s[d] = 0.0;
                w[d] = f;
            } else {
                lo[d] = std::min(lo[d], s[d]);
                hi[d] = std::max(hi[d], s[d]);
            }
        }
        for (int k = 0; k < 3; ++k)
            wpos[3 * i + k] = r[k] - (w[0] * B[0][k] + w[1] * B[1][k] + w[2] * B[2][k]);
    }

    // ---- 3. bins ------------------------------------------------------------------------
    // Bins are at least cutoff/kSub thick, so the stencil spans +-kSub bins (+-m in general):
    // finer bins cut the searched volume from 27 c^3 to (2 kSub + 1)^3 (c/kSub)^3.
    const double creq = cutoff * (1.0 + kMargin);
    const double sub = static_cast<double>(kSub);
    long nb[3];
    for (int d = 0; d < 3; ++d) {
        double len = per[d] ? h[d] : (hi[d] - lo[d]) * h[d];
        nb[d] = std::max(1L, static_cast<long>(std::min(1e9, std::floor(sub * len / creq))));
    }
    // Cap the number of bins at O(n) (sparse or very spread-out systems); coarser bins only
    // get thicker, so the stencil stays valid (m is recomputed below).
    const double cap = 2.0 * n + 27.0;
    while (static_cast<double>(nb[0]) * nb[1] * nb[2] > cap) {
        int dmax = 0;
        for (int d = 1; d < 3; ++d)
            if (nb[d] > nb[dmax]) dmax = d;
        nb[dmax] = std::max(1L, nb[dmax] / 2);
    }
    double binw[3];  // bin width in fractional coordinates
    long m[3];       // stencil half-width in bins
    for (int d = 0; d < 3; ++d) {
        if (per[d]) {
            binw[d] = 1.0 / nb[d];
        } else {
            double ext = hi[d] - lo[d];
            binw[d] = ext > 0 ? ext / nb[d] : 1.0;
        }
        // a pair closer than the cutoff differs by less than creq / h[d] in s_d
        double span = creq / (binw[d] * h[d]);
        m[d] = static_cast<long>(std::ceil(std::min(span, 1e9)));
        if (!per[d]) m[d] = std::min(m[d], nb[d] - 1);  // open: nothing beyond the last bin
    }
    {
        double stencil = 1.0;
        for (int d = 0; d < 3; ++d) stencil *= per[d] ? 2.0 * m[d] + 1.0 : 1.0;
        if (stencil > 1e8)
            throw std::invalid_argument(
                "neighbor_list: cutoff far too large for the periodic cell (more than 1e8 "
                "periodic images to search); is the cell nearly singular?");
    }
    const std::size_t nbins = static_cast<std::size_t>(nb[0] * nb[1] * nb[2]);

    std::vector<long> abin(3 * static_cast<std::size_t>(n));
    std::vector<std::size_t> bin_of(n);
    std::vector<long> bin_start(nbins + 1, 0);
    for (int i = 0; i < n; ++i) {
        long b3[3];
        for (int d = 0; d < 3; ++d) {
            double t = per[d] ? frac[3 * i + d] / binw[d] : (frac[3 * i + d] - lo[d]) / binw[d];
            long b = static_cast<long>(std::floor(t));
            b3[d] = std::min(std::max(b, 0L), nb[d] - 1);
            abin[3 * i + d] = b3[d];
        }
        std::size_t id = static_cast<std::size_t>((b3[0] * nb[1] + b3[1]) * nb[2] + b3[2]);
        bin_of[i] = id;
        ++bin_start[id + 1];
    }
    for (std::size_t b = 0; b < nbins; ++b) bin_start[b + 1] += bin_start[b];
    std::vector<SortedAtom> sorted(n);
    {
        std::vector<long> fill(bin_start.begin(), bin_start.end() - 1);
        for (int i = 0; i < n; ++i) {
            long k = fill[bin_of[i]]++;
            sorted[k] = {wpos[3 * i], wpos[3 * i + 1], wpos[3 * i + 2], i};
        }
    }

    // ---- 4. search ----------------------------------------------------------------------
    NeighborList nl;
    nl.offsets.assign(static_cast<std::size_t>(n) + 1, 0);
    {
        // rough size estimate from the mean density of the occupied region
        double vol = 1.0;
        for (int d = 0; d < 3; ++d) vol *= per[d] ? h[d] : std::max((hi[d] - lo[d]) * h[d], cutoff);
        double per_atom = 4.18879 * cutoff * cutoff * cutoff * n / vol;
        if (!(per[0] || per[1] || per[2])) per_atom = std::min(per_atom, static_cast<double>(n));
        const double est = n * per_atom;
        // (NaN, as inf/inf for a huge cutoff of an open system, reserves the least)
        std::size_t reserve = est * 1.1 + 16.0 < 3e7 ? static_cast<std::size_t>(est * 1.1 + 16.0)
                                                     : (std::isnan(est) ? 16 : std::size_t(30000000));
        nl.index.reserve(reserve);
        nl.dist.reserve(reserve);
        nl.dvec.reserve(3 * reserve);
    }
    // r2max: the largest double with sqrt(r2max) < cutoff, so that r2 <= r2max <=> dist < cutoff
    // exactly (sqrt is correctly rounded, hence monotonic).
    double r2max = cutoff * cutoff;
    while (!(std::sqrt(r2max) < cutoff)) r2max = std::nextafter(r2max, 0.0);
    while (std::sqrt(std::nextafter(r2max, INFINITY)) < cutoff) r2max = std::nextafter(r2max, INFINITY);

    std::vector<long> tb[3], tk[3];  // per direction: target bin and image shift of each offset
    // per-atom scratch, appended to the output in one go
    std::vector<int> b_index;
    std::vector<double> b_dist, b_dvec;
    for (int i = 0; i < n; ++i) {
        for (int d = 0; d < 3; ++d) {
            tb[d].clear();
            tk[d].clear();
            long b = abin[3 * i + d];
            for (long del = -m[d]; del <= m[d]; ++del) {
                long t = b + del;
                if (per[d]) {
                    long k = floor_div(t, nb[d]);
                    tb[d].push_back(t - k * nb[d]);
                    tk[d].push_back(k);
                } else if (t >= 0 && t < nb[d]) {
                    tb[d].push_back(t);
                    tk[d].push_back(0);
                }
            }
        }
        // upper bound on this atom's neighbours: all atoms in the stencil
        std::size_t bound = 0;
        for (std::size_t ix = 0; ix < tb[0].size(); ++ix)
            for (std::size_t iy = 0; iy < tb[1].size(); ++iy) {
                const std::size_t row = static_cast<std::size_t>((tb[0][ix] * nb[1] + tb[1][iy]) * nb[2]);
                for (std::size_t iz = 0; iz < tb[2].size(); ++iz) {
                    const std::size_t bid = row + static_cast<std::size_t>(tb[2][iz]);
                    bound += static_cast<std::size_t>(bin_start[bid + 1] - bin_start[bid]);
                }
            }
        if (b_index.size() < bound) {
            b_index.resize(bound);
            b_dist.resize(bound);
            b_dvec.resize(3 * bound);
        }
        int* o_index = b_index.data();
        double* o_dist = b_dist.data();
        double* o_dvec = b_dvec.data();
        std::size_t cnt = 0;

        const double xi = wpos[3 * i], yi = wpos[3 * i + 1], zi = wpos[3 * i + 2];
        for (std::size_t ix = 0; ix < tb[0].size(); ++ix) {
            for (std::size_t iy = 0; iy < tb[1].size(); ++iy) {
                const std::size_t row = static_cast<std::size_t>((tb[0][ix] * nb[1] + tb[1][iy]) * nb[2]);
                for (std::size_t iz = 0; iz < tb[2].size(); ++iz) {
                    const std::size_t bid = row + static_cast<std::size_t>(tb[2][iz]);
                    const SortedAtom* a = sorted.data() + bin_start[bid];
                    const SortedAtom* aend = sorted.data() + bin_start[bid + 1];
                    if (a == aend) continue;
                    const long k0 = tk[0][ix], k1 = tk[1][iy], k2 = tk[2][iz];
                    const bool zero_shift = (k0 == 0 && k1 == 0 && k2 == 0);
                    // image shift T = k.B ; test (p_j + T) - p_i = p_j - q
                    const double qx = xi - (k0 * B[0][0] + k1 * B[1][0] + k2 * B[2][0]);
                    const double qy = yi - (k0 * B[0][1] + k1 * B[1][1] + k2 * B[2][1]);
                    const double qz = zi - (k0 * B[0][2] + k1 * B[1][2] + k2 * B[2][2]);
                    // Branch-free: every candidate is written, the count advances only if it
                    // is a neighbour (bad branch prediction otherwise costs ~2x for disordered
                    // structures). The per-atom buffer holds all candidates (bound).
                    const int not_self_bin = zero_shift ? 0 : 1;
                    for (; a != aend; ++a) {
                        const double dx = a->x - qx, dy = a->y - qy, dz = a->z - qz;
                        const double r2 = dx * dx + dy * dy + dz * dz;
                        const int j = a->id;
                        o_index[cnt] = j;
                        o_dist[cnt] = r2;
                        o_dvec[3 * cnt] = dx;
                        o_dvec[3 * cnt + 1] = dy;
                        o_dvec[3 * cnt + 2] = dz;
                        cnt += static_cast<std::size_t>((r2 <= r2max) & ((j != i) | not_self_bin));
                    }
                }
            }
        }
        for (std::size_t k = 0; k < cnt; ++k) o_dist[k] = std::sqrt(o_dist[k]);
        nl.index.insert(nl.index.end(), o_index, o_index + cnt);
        nl.dist.insert(nl.dist.end(), o_dist, o_dist + cnt);
        nl.dvec.insert(nl.dvec.end(), o_dvec, o_dvec + 3 * cnt);
        nl.offsets[i + 1] = static_cast<long>(nl.index.size());
    }
    return nl;
}

}  // namespace aceuq
