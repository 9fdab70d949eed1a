#include "cpu/cpu_isa.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <mutex>

namespace kvq::cpu {
namespace {

const AssignKernels* kernels_for(const std::string& name) {
  if (name == "generic") return &assign_kernels_generic;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (name == "avx2" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return &assign_kernels_avx2;
  }
  if (name == "avx512" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
    return &assign_kernels_avx512;
  }
#endif
  return nullptr;
}

std::string joined_supported() {
  std::string s;
  for (const auto& n : supported_isas()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

const AssignKernels* resolve(const std::string& name) {
  if (name.empty() || name == "auto") return kernels_for(supported_isas().back());
  const AssignKernels* k = kernels_for(name);
  TORCH_CHECK(k != nullptr, "kohonen_vq: CPU instruction set '", name,
              "' is not available on this CPU / build; available: ", joined_supported(), " (or 'auto')");
  return k;
}

std::atomic<const AssignKernels*> g_active{nullptr};
std::mutex g_mutex;

}  // namespace

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (const char* n : {"generic", "avx2", "avx512"}) {
    if (kernels_for(n) != nullptr) out.emplace_back(n);
  }
  return out;
}

const AssignKernels& active_assign_kernels() {
  const AssignKernels* k = g_active.load();
  if (k == nullptr) {
    std::lock_guard<std::mutex> lock(g_mutex);
    k = g_active.load();
    if (k == nullptr) {
      const char* env = std::getenv("KOHONEN_VQ_CPU_ISA");
      k = resolve(env ? env : "auto");
      g_active.store(k);
    }
  }
  return *k;
}

std::string set_cpu_isa(const std::string& name) {
  const std::string previous = active_assign_kernels().isa;
  const AssignKernels* k = resolve(name);
  std::lock_guard<std::mutex> lock(g_mutex);
  g_active.store(k);
  return previous;
}

}  // namespace kvq::cpu
