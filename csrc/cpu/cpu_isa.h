// Run-time choice of the CPU instruction set for the assignment kernel.
#pragma once
#include <string>
#include <vector>

#include "cpu/assign_isa.h"

namespace kvq::cpu {

// Instruction sets compiled into this library and supported by the running CPU, best last.
std::vector<std::string> supported_isas();
// The kernels in use: the best supported set, or the one named by KOHONEN_VQ_CPU_ISA /
// set_cpu_isa (which must be supported, else an error says what is available).
const AssignKernels& active_assign_kernels();
// Selects an instruction set by name ("generic", "avx2", "avx512" or "auto"); returns the previous one.
std::string set_cpu_isa(const std::string& name);

}  // namespace kvq::cpu
