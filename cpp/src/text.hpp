// Text for the core's error messages (internal to cpp/src, not part of the public API).
#pragma once

#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

namespace aceuq {
namespace text {

// [1,2,3]
inline std::string join_ints(const std::vector<int>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
    return s + "]";
}

// x with `digits` significant digits (the default stream format: 1.2e+08, 0.001, 2)
inline std::string number(double x, int digits) {
    std::ostringstream s;
    s << std::setprecision(digits) << x;
    return s.str();
}

}  // namespace text
}  // namespace aceuq
