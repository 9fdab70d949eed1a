// What this library was built with, as JSON, and the CPU instruction-set switch; exposed as the ops
// kohonen_vq::build_info and kohonen_vq::set_cpu_isa so Python and C++ read the same facts.
#pragma once
#include <string>

namespace kvq {
std::string build_info_json();
std::string set_cpu_isa_op(std::string name);
}  // namespace kvq
