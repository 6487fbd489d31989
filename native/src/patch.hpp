// The patch-shuffle detector over an export directory (engine/runtime/ort_patch.py in C++):
// manifest checks, the preprocessing recorded in the manifest (fit pad / resize / short), one graph
// call per batch, the calibration (temperature or isotonic) and threshold.
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
  std::string fit = "pad";  // "pad" (zero padding), "resize" (bilinear upscale), "short" (bicubic, short side)
  int short_side = 0;       // fit "short" only
  float mean[3] = {0.5f, 0.5f, 0.5f};
  float std[3] = {0.25f, 0.25f, 0.25f};
};

struct LoadOptions {
  std::string precision = "fp32";
  std::string runtime = "onnxruntime";
  bool verify_hashes = true;
  SessionOptions session;
};

/// logit -> p_ai (calibration/decision.py:Calibrator): sigmoid(z / T), or isotonic breakpoints
/// interpolated like numpy.interp.
struct Calibration {
  std::string method = "temperature";
  double temperature = 1.0;
  std::vector<double> x, y;
  double operator()(double logit) const;
};

class PatchModel {
 public:
  PatchModel(const std::string& export_dir, const LoadOptions& opt);
  /// Calibrated p_ai of each image (one graph call for all of them).
  std::vector<double> predict(const std::vector<const RgbImage*>& images);
  /// (N, 3, S, S) float32 network input, exactly engine/patch/preprocess.py:prepare_batch.
  std::vector<float> prepare(const std::vector<const RgbImage*>& images) const;
  /// The S x S uint8 RGB centre crop of one image after fitting (fit_min_side then crop).
  std::vector<uint8_t> fit_and_crop(const RgbImage& im) const;
  double calibrate(double logit) const;

  const std::string& version() const { return version_; }
  double threshold() const { return threshold_; }
  const std::string& runtime_description() const { return runtime_desc_; }

 private:
  PatchPreprocess pre_;
  double threshold_ = 0.5;
  Calibration calibration_;
  std::string version_, runtime_desc_;
  std::unique_ptr<Session> session_;
};

}  // namespace semgir
