// The minimal harness of the C++ tests: failures are counted and reported, the run goes on; no framework.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <iostream>
#include <sstream>
#include <string>

namespace kvq_test {

inline int g_failures = 0;
inline int g_checks = 0;

inline void report(bool ok, const std::string& what, const char* file, int line) {
  ++g_checks;
  if (ok) return;
  ++g_failures;
  std::cerr << file << ":" << line << ": FAILED: " << what << std::endl;
}

inline std::string max_diff(const at::Tensor& a, const at::Tensor& b) {
  std::ostringstream s;
  s << "max |diff| = " << (a - b).abs().nan_to_num(0.0, 1e300, 1e300).max().item<double>();
  return s.str();
}

// Same shape and allclose, compared in float64 on the CPU; NaN equals NaN.
inline void expect_close(const at::Tensor& a, const at::Tensor& b, double rtol, double atol, const char* what,
                  const char* file, int line) {
  const at::Tensor x = a.detach().cpu().to(at::kDouble), y = b.detach().cpu().to(at::kDouble);
  if (x.sizes() != y.sizes()) {
    std::ostringstream s;
    s << what << ": shapes " << x.sizes() << " and " << y.sizes();
    return report(false, s.str(), file, line);
  }
  const bool ok = at::allclose(x, y, rtol, atol, /*equal_nan=*/true);
  report(ok, std::string(what) + (ok ? "" : ": " + max_diff(x, y)), file, line);
}

inline void expect_equal(const at::Tensor& a, const at::Tensor& b, const char* what, const char* file, int line) {
  const at::Tensor x = a.detach().cpu(), y = b.detach().cpu();
  const bool ok = x.scalar_type() == y.scalar_type() && x.sizes() == y.sizes() && at::equal(x, y);
  report(ok, std::string(what) + " (exact: dtype, shape and values)", file, line);
}

// `fn` must throw c10::Error whose message contains `needle` (the argument's quoted name).
inline void expect_throws(const std::function<void()>& fn, const std::string& needle, const char* what,
                   const char* file, int line) {
  try {
    fn();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    return report(msg.find(needle) != std::string::npos,
                  std::string(what) + ": message lacks " + needle + ": " + msg, file, line);
  }
  report(false, std::string(what) + ": no c10::Error thrown", file, line);
}

#define EXPECT(cond) report((cond), #cond, __FILE__, __LINE__)
#define EXPECT_CLOSE(a, b, rtol, atol) expect_close((a), (b), (rtol), (atol), #a " ~ " #b, __FILE__, __LINE__)
#define EXPECT_EQUAL(a, b) expect_equal((a), (b), #a " == " #b, __FILE__, __LINE__)
#define EXPECT_THROWS(stmt, needle) expect_throws([&] { (void)(stmt); }, (needle), #stmt, __FILE__, __LINE__)

// Runs one group; an unexpected exception counts as a failure and does not stop the others.
inline void run(const char* name, const std::function<void()>& fn) {
  const int before = g_failures;
  try {
    fn();
  } catch (const std::exception& e) {
    report(false, std::string("unexpected exception: ") + e.what(), __FILE__, __LINE__);
  }
  std::cout << (g_failures == before ? "[ OK ] " : "[FAIL] ") << name << std::endl;
}

// main's ending: the tally, and exit status 0 iff every check passed.
inline int summary() {
  std::cout << g_checks - g_failures << "/" << g_checks << " checks passed" << std::endl;
  return g_failures == 0 ? 0 : 1;
}

}  // namespace kvq_test
