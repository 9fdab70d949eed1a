// A CPU simulator for the project's CUDA kernels, for tests only: csrc/cuda/device_runtime.cuh includes it
// instead of the CUDA runtime when KVQ_CUDA_SIM is defined, so the kernels' own source compiles as C++.
//
// Each thread of a block is a fiber (ucontext) on one OS thread. A fiber runs until it reaches
// __syncthreads(_or) or a warp-synchronous call (__shfl_xor_sync, mma.sync), or exits; the scheduler releases
// a barrier when every live thread of the block (or lane of the warp) is waiting at it. Fibers run in a
// seeded random order between barriers, so a kernel that relies on an order it never enforces can fail.
// Blocks run one after another. Dynamic shared memory starts as 0xff bytes (NaN floats), so a read of
// memory the kernel never wrote shows up in its results. A barrier that the threads cannot all reach
// (divergent __syncthreads, a warp call with exited lanes) throws instead of hanging.
//
// What this checks: indexing, tiling and tail handling, barriers, warp exchanges, the TF32 MMA fragment
// layout (as PTX documents it) and the kernels' arithmetic, on inputs small enough for the CPU. What it
// cannot check: timing, the memory model and data races between threads, and anything the hardware does
// that PTX does not specify. The real GPU tests (pytest -m cuda, ctest on a GPU) stay the authority.
// A kernel that uses a CUDA built-in this file lacks does not compile in the C++ tests: add it here, as the
// CUDA or PTX documentation specifies it.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one block runs at a time, so a function-local static is that block's memory
#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};

// The built-in variables of the running fiber; the scheduler sets them before it resumes one.
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

inline unsigned __float_as_uint(float v) { return std::bit_cast<unsigned>(v); }
// Each operation rounded on its own: the tests build with -ffp-contract=off, so nothing fuses them.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
using std::isfinite;
inline unsigned long long min(unsigned long long a, unsigned long long b) { return b < a ? b : a; }
inline int64_t min(int64_t a, int64_t b) { return b < a ? b : a; }
inline int64_t max(int64_t a, int64_t b) { return a < b ? b : a; }

// Atomics need no synchronisation: fibers only switch at barriers.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
inline unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
  const unsigned long long old = *address;
  if (value < old) *address = value;
  return old;
}

namespace kvq_sim {

constexpr int kWarpSize = 32;
constexpr int kMaxThreads = 1024;
constexpr size_t kMaxDynamicShared = 227 * 1024;  // the largest opt-in dynamic shared memory (H100)
constexpr size_t kFiberStack = 128 * 1024;  // allocated uninitialised: only the pages a fiber touches are used
constexpr int kSlotWords = 8;  // 64-bit words each lane may publish at a warp-synchronous call

enum class State { Ready, AtBlockBarrier, AtWarpSync, Done };

struct Fiber {
  ucontext_t context;
  State state = State::Ready;
  unsigned warp_calls = 0;  // warp-synchronous calls made so far: their parity picks the exchange slots
  bool vote = false;        // __syncthreads_or's predicate at the barrier it waits at
  bool ballot = false;      // the block's OR of the votes, set when that barrier is released
};

// One launch: its fibers, their stacks and the per-block state.
class Launch {
 public:
  Launch(dim3 grid, dim3 block, size_t shared_bytes, std::function<void()> body)
      : grid_(grid),
        block_(block),
        threads_(checked_threads(block, shared_bytes)),
        body_(std::move(body)),
        fibers_(threads_),
        stacks_(new unsigned char[static_cast<size_t>(threads_) * kFiberStack]),
        shared_(shared_bytes + 16),
        slots_(static_cast<size_t>(threads_) * 2 * kSlotWords) {}

  void run();

  static Launch* current;
  unsigned char* dynamic_shared() {  // 16-byte aligned, like the CUDA allocation
    const auto p = reinterpret_cast<uintptr_t>(shared_.data());
    return shared_.data() + ((16 - p % 16) % 16);
  }
  Fiber& self() { return fibers_[running_]; }
  int lane() const { return running_ % kWarpSize; }
  uint64_t* slot(int thread, unsigned parity) {
    return &slots_[(static_cast<size_t>(thread) * 2 + parity) * kSlotWords];
  }
  int warp_base() const { return running_ - running_ % kWarpSize; }
  void wait(State why);  // from a fiber: blocks until the scheduler releases it

 private:
  // The block's thread count, after the checks a CUDA launch makes (before anything is allocated).
  static int checked_threads(dim3 block, size_t shared_bytes) {
    const uint64_t threads = uint64_t{block.x} * block.y * block.z;
    if (threads < 1 || threads > kMaxThreads) {
      throw std::invalid_argument("cuda_sim: block of " + std::to_string(threads) + " threads, expected 1 to " +
                                  std::to_string(kMaxThreads));
    }
    if (shared_bytes > kMaxDynamicShared) {
      throw std::invalid_argument("cuda_sim: " + std::to_string(shared_bytes) +
                                  " bytes of dynamic shared memory, more than the " +
                                  std::to_string(kMaxDynamicShared) + " a block may have");
    }
    return static_cast<int>(threads);
  }
  static void fiber_main();
  void run_block();
  bool release_warps();
  void resume(int thread);

  dim3 grid_, block_;
  int threads_;
  std::function<void()> body_;
  std::vector<Fiber> fibers_;
  std::unique_ptr<unsigned char[]> stacks_;
  std::vector<unsigned char> shared_;
  std::vector<uint64_t> slots_;
  ucontext_t scheduler_{};
  int running_ = 0;
  std::string error_;
};

inline Launch* Launch::current = nullptr;

// The seed of the fiber order; tests may change it to try other interleavings.
inline uint64_t& schedule_seed() {
  static uint64_t seed = 1;
  return seed;
}

inline void Launch::fiber_main() {
  Launch& l = *current;
  try {
    l.body_();
  } catch (const std::exception& e) {
    if (l.error_.empty()) l.error_ = e.what();
  }
  l.self().state = State::Done;
  swapcontext(&l.self().context, &l.scheduler_);
}

inline void Launch::wait(State why) {
  self().state = why;
  swapcontext(&self().context, &scheduler_);
}

inline void Launch::resume(int thread) {
  running_ = thread;
  threadIdx = {static_cast<unsigned>(thread % block_.x), static_cast<unsigned>(thread / block_.x % block_.y),
               static_cast<unsigned>(thread / (block_.x * block_.y))};
  swapcontext(&scheduler_, &fibers_[thread].context);
}

// Releases every warp whose live lanes all wait at a warp-synchronous call. Throws for a warp whose lanes
// wait at different kinds of barrier, or at a warp call while some lanes have exited (all calls here use
// the full mask).
inline bool Launch::release_warps() {
  bool released = false;
  for (int base = 0; base < threads_; base += kWarpSize) {
    const int end = std::min(threads_, base + kWarpSize);
    int at_warp = 0, other = 0;
    for (int t = base; t < end; ++t) {
      if (fibers_[t].state == State::AtWarpSync) ++at_warp;
      else ++other;
    }
    if (at_warp == 0) continue;
    if (other > 0) {
      throw std::runtime_error("cuda_sim: warp " + std::to_string(base / kWarpSize) +
                               " deadlocks: some lanes wait at a warp-synchronous call, others at __syncthreads "
                               "or have exited");
    }
    for (int t = base; t < end; ++t) fibers_[t].state = State::Ready;
    released = true;
  }
  return released;
}

inline void Launch::run_block() {
  std::fill(shared_.begin(), shared_.end(), static_cast<unsigned char>(0xff));
  for (int t = 0; t < threads_; ++t) {
    Fiber& f = fibers_[t];
    f = Fiber{};
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = stacks_.get() + static_cast<size_t>(t) * kFiberStack;
    f.context.uc_stack.ss_size = kFiberStack;
    f.context.uc_link = nullptr;
    makecontext(&f.context, &Launch::fiber_main, 0);
  }
  std::mt19937_64 rng(schedule_seed() ^ (uint64_t{blockIdx.x} << 32 | blockIdx.y << 16 | blockIdx.z));
  std::vector<int> order(threads_);
  for (int t = 0; t < threads_; ++t) order[t] = t;
  while (true) {
    std::shuffle(order.begin(), order.end(), rng);
    for (int t : order) {
      if (fibers_[t].state == State::Ready) resume(t);
    }
    if (!error_.empty()) throw std::runtime_error("cuda_sim: kernel failed: " + error_);
    if (release_warps()) continue;
    int live = 0;
    for (const Fiber& f : fibers_) live += f.state != State::Done;
    if (live == 0) return;
    // Every live thread now waits at __syncthreads (a warp call would have been released or thrown).
    bool any = false;
    for (const Fiber& f : fibers_) any = any || (f.state == State::AtBlockBarrier && f.vote);
    for (Fiber& f : fibers_) {
      if (f.state != State::AtBlockBarrier) continue;
      f.state = State::Ready;
      f.ballot = any;
      f.vote = false;
    }
  }
}

inline void Launch::run() {
  Launch* outer = current;
  current = this;
  blockDim = block_;
  gridDim = grid_;
  try {
    for (unsigned z = 0; z < grid_.z; ++z)
      for (unsigned y = 0; y < grid_.y; ++y)
        for (unsigned x = 0; x < grid_.x; ++x) {
          blockIdx = {x, y, z};
          run_block();
        }
  } catch (...) {
    current = outer;
    throw;
  }
  current = outer;
}

inline unsigned char* dynamic_shared() { return Launch::current->dynamic_shared(); }

// kernel<<<grid, block, shared_bytes>>>(args...), run to completion on the CPU.
template <typename... Params, typename... Args>
void launch(dim3 grid, dim3 block, size_t shared_bytes, void (*kernel)(Params...), Args&&... args) {
  std::tuple<Params...> params(std::forward<Args>(args)...);
  Launch(grid, block, shared_bytes, [&] { std::apply(kernel, params); }).run();
}

// Publishes `words` to the warp, waits for all its lanes, and returns the slots of this call's parity.
inline unsigned warp_exchange(const uint64_t* words, int count) {
  Launch& l = *Launch::current;
  const unsigned parity = l.self().warp_calls++ & 1u;
  std::memcpy(l.slot(l.warp_base() + l.lane(), parity), words, sizeof(uint64_t) * count);
  l.wait(State::AtWarpSync);
  return parity;
}

// cvt.rna.tf32.f32: round to 10 mantissa bits, ties away from zero; infinities and NaN pass through.
inline uint32_t to_tf32(float v) {
  uint32_t bits = std::bit_cast<uint32_t>(v);
  if ((bits & 0x7f800000u) == 0x7f800000u) return bits;
  return (bits + 0x1000u) & 0xffffe000u;
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 with PTX's fragment layout (g = lane / 4,
// t = lane % 4): a0..a3 hold A[g][t], A[g + 8][t], A[g][t + 4], A[g + 8][t + 4]; b0, b1 hold B[t][g],
// B[t + 4][g]; c0..c3 hold C[g][2t], C[g][2t + 1], C[g + 8][2t], C[g + 8][2t + 1].
inline void mma_m16n8k8_tf32(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const uint64_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
  const unsigned parity = warp_exchange(mine, 6);
  Launch& l = *Launch::current;
  const auto reg = [&](int lane, int index) {
    return std::bit_cast<float>(static_cast<uint32_t>(l.slot(l.warp_base() + lane, parity)[index]));
  };
  const int g = l.lane() / 4, t = l.lane() % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    float acc = c[i];
    for (int k = 0; k < 8; ++k) {
      const float a_rk = reg((row % 8) * 4 + k % 4, (row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0));
      const float b_kc = reg(col * 4 + k % 4, 4 + (k >= 4 ? 1 : 0));
      acc = std::fma(a_rk, b_kc, acc);
    }
    c[i] = acc;
  }
}

}  // namespace kvq_sim

inline void __syncthreads() { kvq_sim::Launch::current->wait(kvq_sim::State::AtBlockBarrier); }

// Non-zero iff `predicate` is non-zero for any thread of the block (the scheduler ORs the votes when it
// releases the barrier).
inline int __syncthreads_or(int predicate) {
  kvq_sim::Fiber& self = kvq_sim::Launch::current->self();
  self.vote = predicate != 0;
  __syncthreads();
  return self.ballot;
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "cuda_sim: shuffles of at most 64 bits");
  if (mask != 0xffffffffu) throw std::invalid_argument("cuda_sim: __shfl_xor_sync supports the full mask only");
  uint64_t word = 0;
  std::memcpy(&word, &value, sizeof(T));
  const unsigned parity = kvq_sim::warp_exchange(&word, 1);
  kvq_sim::Launch& l = *kvq_sim::Launch::current;
  std::memcpy(&value, l.slot(l.warp_base() + (l.lane() ^ lane_mask), parity), sizeof(T));
  return value;
}
