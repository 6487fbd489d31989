// semgir.hpp: a header-only C++ wrapper (RAII) over the C API of libsemgir (semgir.h).
//
//   semgir::Engine eng("patch-export");                 // throws semgir::Error on failure
//   semgir::Result r = eng.score_file("a.jpg");         // per-item errors are in r.status / r.error
//   std::vector<semgir::Result> rs = eng.score_files({"a.jpg", "b.png"});
#ifndef SEMGIR_HPP
#define SEMGIR_HPP

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "semgir.h"

namespace semgir {

/// A failed call (open, or a call-level failure of a batch); code() is the C status.
class Error : public std::runtime_error {
 public:
  Error(semgir_status code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  semgir_status code() const noexcept { return code_; }

 private:
  semgir_status code_;
};

struct Result : semgir_result {
  Result() : semgir_result() {}
  bool ok() const noexcept { return status == SEMGIR_OK; }
  const char* label_name() const noexcept {
    return label == SEMGIR_LABEL_AI ? "ai" : label == SEMGIR_LABEL_REAL ? "real" : nullptr;
  }
};

static_assert(sizeof(Result) == sizeof(semgir_result), "Result must stay layout-compatible with semgir_result");

class Options {
 public:
  Options() { semgir_options_init(&o_); }
  Options& method(semgir_method m) { o_.method = m; return *this; }
  Options& runtime(semgir_runtime r) { o_.runtime = r; return *this; }
  Options& precision(std::string p) { precision_ = std::move(p); o_.precision = precision_.c_str(); return *this; }
  Options& intra_threads(int n) { o_.intra_threads = n; return *this; }
  Options& verify_hashes(bool v) { o_.verify_hashes = v ? 1 : 0; return *this; }
  Options& max_pixels(int64_t n) { o_.max_pixels = n; return *this; }
  Options& max_bytes(int64_t n) { o_.max_bytes = n; return *this; }
  Options& steps(int n) { o_.steps = n; return *this; }
  Options& seed(int64_t n) { o_.seed = n; return *this; }
  Options& guidance_scale(double g) { o_.guidance_scale = g; return *this; }
  Options& max_new_tokens(int n) { o_.max_new_tokens = n; return *this; }
  Options& num_beams(int n) { o_.num_beams = n; return *this; }
  const semgir_options* get() const { return &o_; }
  Options(const Options& other) : o_(other.o_), precision_(other.precision_) { fix(); }
  Options& operator=(const Options& other) { o_ = other.o_; precision_ = other.precision_; fix(); return *this; }

 private:
  void fix() { if (o_.precision) o_.precision = precision_.c_str(); }
  semgir_options o_;
  std::string precision_;
};

class Engine {
 public:
  explicit Engine(const std::string& export_dir, const Options& options = Options()) {
    semgir_status s = semgir_open(export_dir.c_str(), options.get(), &h_);
    if (s != SEMGIR_OK) throw Error(s, semgir_last_error());
  }
  ~Engine() { semgir_close(h_); }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  Engine(Engine&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Engine& operator=(Engine&& o) noexcept {
    if (this != &o) { semgir_close(h_); h_ = std::exchange(o.h_, nullptr); }
    return *this;
  }

  Result score_file(const std::string& path) {
    Result r;
    semgir_score_file(h_, path.c_str(), &r);
    return r;
  }
  Result score_encoded(const void* data, size_t size) {
    Result r;
    semgir_score_encoded(h_, data, size, &r);
    return r;
  }
  Result score_rgb(const uint8_t* rgb, int width, int height, int stride = 0) {
    semgir_rgb_image im{rgb, width, height, stride};
    Result r;
    semgir_score_rgb(h_, &im, &r);
    return r;
  }
  std::vector<Result> score_files(const std::vector<std::string>& paths) {
    std::vector<const char*> c;
    for (const auto& p : paths) c.push_back(p.c_str());
    std::vector<Result> out(paths.size());
    check_batch(semgir_score_files(h_, c.data(), c.size(), out.data()));
    return out;
  }

  /// score_files with each item's SemGIR details (caption, stage times)
  std::vector<Result> score_files(const std::vector<std::string>& paths, std::vector<semgir_details>* details) {
    std::vector<const char*> c;
    for (const auto& p : paths) c.push_back(p.c_str());
    std::vector<Result> out(paths.size());
    details->assign(paths.size(), semgir_details());
    for (auto& d : *details) semgir_details_init(&d);
    check_batch(semgir_score_files_details(h_, c.data(), c.size(), out.data(), details->data()));
    return out;
  }
  bool random_weights() const { return semgir_engine_random_weights(h_) != 0; }
  std::string method() const { return semgir_engine_method(h_); }
  std::string model_version() const { return semgir_engine_model_version(h_); }
  std::string runtime() const { return semgir_engine_runtime(h_); }
  double threshold() const { return semgir_engine_threshold(h_); }
  semgir_engine* handle() const noexcept { return h_; }

 private:
  static void check_batch(semgir_status s) {
    if (s != SEMGIR_OK && s != SEMGIR_E_PARTIAL && s != SEMGIR_E_INPUT) throw Error(s, semgir_last_error());
  }
  semgir_engine* h_ = nullptr;
};

}  // namespace semgir
#endif  // SEMGIR_HPP
