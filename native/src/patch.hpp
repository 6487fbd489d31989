// The patch-shuffle detector over an export directory (engine/runtime/ort_patch.py in C++):
// manifest checks, the preprocessing recorded in the manifest, one graph call per batch, the
// temperature calibration and threshold.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "decode.hpp"
#include "runtime.hpp"

namespace semgir {

/// The export directory is unusable (missing, stale, foreign, corrupt): SEMGIR_E_EXPORT.
class ExportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
/// A setting this build does not implement: SEMGIR_E_UNSUPPORTED.
class UnsupportedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PatchPreprocess {
  int size = 256;
  std::string fit = "pad";
  float mean[3] = {0.5f, 0.5f, 0.5f};
  float std[3] = {0.25f, 0.25f, 0.25f};
};

struct LoadOptions {
  std::string precision = "fp32";
  std::string runtime = "onnxruntime";
  bool verify_hashes = true;
  SessionOptions session;
};

class PatchModel {
 public:
  PatchModel(const std::string& export_dir, const LoadOptions& opt);
  /// Calibrated p_ai of each image (one graph call for all of them).
  std::vector<double> predict(const std::vector<const RgbImage*>& images);
  /// (N, 3, S, S) float32 network input, exactly engine/patch/preprocess.py:prepare_batch.
  std::vector<float> prepare(const std::vector<const RgbImage*>& images) const;
  double calibrate(double logit) const;

  const std::string& version() const { return version_; }
  double threshold() const { return threshold_; }
  const std::string& runtime_description() const { return runtime_desc_; }

 private:
  PatchPreprocess pre_;
  double threshold_ = 0.5, temperature_ = 1.0;
  std::string version_, runtime_desc_;
  std::unique_ptr<Session> session_;
};

}  // namespace semgir
