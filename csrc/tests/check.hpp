// A self-contained test harness for the native tests (no GoogleTest: CI has no network for a download).
// TEST(name) registers a function; CHECK* count a check and, on failure, print file:line, the values
// and the CONTEXT lines active at that point (the loop parameters being tested), then carry on so
// one run reports every broken case. This header defines main(): include it in one file per executable.
//
//   ./test_select              run every test of the executable
//   ./test_select nm tie       run the tests whose name contains "nm" or "tie"
//   ./test_select --list       print the test names
//
// Checks are made from the test's own thread only (kernels may spawn workers, the checks do not).
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <sstream>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#if defined(__GNUG__)
#include <cxxabi.h>

#include <cstdlib>
#endif

namespace check {

struct Case {
  const char* name;
  void (*fn)();
};

inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

struct Registrar {
  Registrar(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};

struct State {
  long checks = 0;
  long failures = 0;          // in the running test
  long reported = 0;          // failures printed in the running test
  std::vector<std::string> context;
};

inline State& state() {
  static State s;
  return s;
}

// A failing loop would otherwise print thousands of lines; the count stays exact.
constexpr long kMaxReportedPerTest = 12;

// Printable form of a value for failure messages: uint8 as a number, floats with full precision.
template <class T>
std::string show(const T& v) {
  std::ostringstream os;
  if constexpr (std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::int8_t> || std::is_same_v<T, bool>) {
    os << static_cast<int>(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    os.precision(17);
    os << v;
  } else {
    os << v;
  }
  return os.str();
}

// Readable exception type names in failure messages ("std::invalid_argument", not "St16invalid_argument").
inline std::string type_name(const std::type_info& type) {
#if defined(__GNUG__)
  int status = 0;
  char* name = abi::__cxa_demangle(type.name(), nullptr, nullptr, &status);
  if (status == 0 && name) {
    std::string out(name);
    std::free(name);
    return out;
  }
#endif
  return type.name();
}

inline void fail(const char* file, int line, const std::string& what) {
  State& s = state();
  ++s.failures;
  if (++s.reported > kMaxReportedPerTest) {
    if (s.reported == kMaxReportedPerTest + 1) std::printf("    (further failures of this test are counted, not printed)\n");
    return;
  }
  const char* base = std::strrchr(file, '/');
  std::printf("    %s:%d: %s\n", base ? base + 1 : file, line, what.c_str());
  for (const auto& c : s.context) std::printf("      in %s\n", c.c_str());
}

inline bool record(bool ok, const char* file, int line, const std::string& what) {
  ++state().checks;
  if (!ok) fail(file, line, what);
  return ok;
}

// CONTEXT(...) for the rest of the scope: its parts are streamed into one line shown with failures.
class Context {
 public:
  template <class... Parts>
  explicit Context(const Parts&... parts) {
    std::ostringstream os;
    (os << ... << parts);
    state().context.push_back(os.str());
  }
  ~Context() { state().context.pop_back(); }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
};

// Element-wise equality of two sequences, reported as one check: sizes, first mismatch, mismatch count.
template <class A, class B>
bool same_sequence(const A& got, const B& want, const char* file, int line, const char* expr) {
  std::ostringstream os;
  bool ok = got.size() == want.size();
  if (!ok) {
    os << expr << ": size " << got.size() << ", expected " << want.size();
  } else {
    std::size_t first = 0, bad = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
      if (!(got[i] == want[i]) && bad++ == 0) first = i;
    ok = bad == 0;
    if (!ok)
      os << expr << ": " << bad << " of " << got.size() << " differ, first at [" << first << "]: got "
         << show(got[first]) << ", expected " << show(want[first]);
  }
  return record(ok, file, line, os.str());
}

inline bool near(double got, double want, double rel, double abs) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::fabs(got - want) <= abs + rel * std::fabs(want);
}

inline int run_all(int argc, char** argv) {
  // Line-buffered even into a pipe, so a crashing test still shows which test it was.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::vector<std::string> filters;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--list") == 0) {
      for (const auto& c : registry()) std::printf("%s\n", c.name);
      return 0;
    }
    filters.emplace_back(argv[i]);
  }
  const char* exe = std::strrchr(argv[0], '/');
  exe = exe ? exe + 1 : argv[0];
  int ran = 0, failed = 0;
  const auto start = std::chrono::steady_clock::now();
  for (const auto& c : registry()) {
    bool wanted = filters.empty();
    for (const auto& f : filters) wanted |= std::string(c.name).find(f) != std::string::npos;
    if (!wanted) continue;
    State& s = state();
    s.failures = s.reported = 0;
    s.context.clear();
    const long checks_before = s.checks;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      c.fn();
    } catch (const std::exception& e) {
      fail(__FILE__, __LINE__, "uncaught " + type_name(typeid(e)) + ": " + e.what());
    } catch (...) {
      fail(__FILE__, __LINE__, "uncaught non-standard exception");
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ++ran;
    failed += s.failures > 0;
    std::printf("%s %-44s %8ld checks %8.1f ms\n", s.failures ? "FAIL" : "ok  ", c.name, s.checks - checks_before, ms);
  }
  const double total_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %d tests, %ld checks, %d failed (%.0f ms)\n", exe, ran, state().checks, failed, total_ms);
  if (ran == 0) {
    std::printf("no test matched the filters\n");
    return 2;
  }
  return failed ? 1 : 0;
}

}  // namespace check

#define CHECK_CAT2(a, b) a##b
#define CHECK_CAT(a, b) CHECK_CAT2(a, b)

#define TEST(name)                                                  \
  static void name();                                               \
  static const ::check::Registrar CHECK_CAT(name, _registrar){#name, name}; \
  static void name()

#define CONTEXT(...) const ::check::Context CHECK_CAT(check_context_, __LINE__)(__VA_ARGS__)

#define CHECK(cond) ::check::record(static_cast<bool>(cond), __FILE__, __LINE__, "CHECK(" #cond ") failed")

#define CHECK_EQ(a, b)                                                                                        \
  do {                                                                                                        \
    const auto& check_a_ = (a);                                                                               \
    const auto& check_b_ = (b);                                                                               \
    ::check::record(check_a_ == check_b_, __FILE__, __LINE__,                                                 \
                    std::string(#a " == " #b ": got ") + ::check::show(check_a_) + ", expected " +            \
                        ::check::show(check_b_));                                                             \
  } while (0)

#define CHECK_NEAR(got, want, rel, abs)                                                                       \
  do {                                                                                                        \
    const double check_g_ = (got), check_w_ = (want);                                                         \
    ::check::record(::check::near(check_g_, check_w_, rel, abs), __FILE__, __LINE__,                          \
                    std::string(#got " ~ " #want ": got ") + ::check::show(check_g_) + ", expected " +        \
                        ::check::show(check_w_));                                                             \
  } while (0)

#define CHECK_SEQ_EQ(got, want) ::check::same_sequence((got), (want), __FILE__, __LINE__, #got " == " #want)

// The expression throws exactly `type` (not a subclass) whose what() equals `message`.
#define CHECK_THROWS(expr, type, message)                                                                     \
  do {                                                                                                        \
    std::string check_outcome_ = "no exception";                                                              \
    bool check_ok_ = false;                                                                                   \
    try {                                                                                                     \
      (void)(expr);                                                                                           \
    } catch (const std::exception& check_e_) {                                                                \
      check_ok_ = typeid(check_e_) == typeid(type) && std::string(check_e_.what()) == (message);              \
      check_outcome_ = ::check::type_name(typeid(check_e_)) + "(\"" + check_e_.what() + "\")";                \
    } catch (...) {                                                                                           \
      check_outcome_ = "a non-standard exception";                                                            \
    }                                                                                                         \
    ::check::record(check_ok_, __FILE__, __LINE__,                                                            \
                    std::string(#expr " should throw " #type "(\"") + (message) + "\"), got " + check_outcome_); \
  } while (0)

#ifndef CHECK_NO_MAIN
int main(int argc, char** argv) { return ::check::run_all(argc, argv); }
#endif
