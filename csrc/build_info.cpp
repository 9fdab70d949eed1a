#include "build_info.h"

#include <sstream>

#include "cpu/cpu_isa.h"

namespace kvq {
namespace {

std::string json_list(const std::string& csv) {
  std::string out = "[";
  std::stringstream in(csv);
  std::string item;
  bool first = true;
  while (std::getline(in, item, ';')) {
    std::stringstream parts(item);
    std::string p;
    while (std::getline(parts, p, ',')) {
      if (p.empty()) continue;
      out += (first ? "\"" : ", \"") + p + "\"";
      first = false;
    }
  }
  return out + "]";
}

}  // namespace

std::string build_info_json() {
  std::string supported;
  for (const auto& s : cpu::supported_isas()) supported += s + ",";
  std::ostringstream o;
  o << "{\"version\": \"" << KVQ_VERSION << "\", \"torch_version\": \"" << KVQ_TORCH_VERSION << "\", "
    << "\"compiler\": \"" << __VERSION__ << "\", "
#ifdef KVQ_WITH_CUDA
    << "\"cuda\": true, \"cuda_version\": \"" << KVQ_CUDA_VERSION << "\", \"cuda_archs\": " << json_list(KVQ_CUDA_ARCHS)
    << ", "
#else
    << "\"cuda\": false, \"cuda_version\": null, \"cuda_archs\": [], "
#endif
    << "\"cpu_isas_compiled\": " << json_list(KVQ_CPU_ISAS) << ", \"cpu_isas_supported\": " << json_list(supported)
    << ", \"cpu_isa\": \"" << cpu::active_assign_kernels().isa << "\", \"cpu_parallel\": \"" << KVQ_PARALLEL
    << "\"}";
  return o.str();
}

std::string set_cpu_isa_op(std::string name) { return cpu::set_cpu_isa(name); }

}  // namespace kvq
