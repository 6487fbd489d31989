#include "patch.hpp"

#include "resample.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace semgir {
namespace {

using json = nlohmann::json;
constexpr const char* kComponent = "patch_cnn";
constexpr const char* kModelFormat = "semgir-engine/patch-shuffle";

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool is_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return f.good();
}

std::string file_sha256(const std::string& path) {
  std::string s = read_text(path);
  return sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace

PatchModel::PatchModel(const std::string& dir, const LoadOptions& opt) {
  const std::string mpath = dir + "/manifest.json";
  if (!is_file(mpath))
    throw ExportError(dir + " has no manifest.json: export it with `semgir-engine export --components patch_cnn --out " +
                      dir + "`");
  json m;
  try {
    m = json::parse(read_text(mpath));
  } catch (const json::exception& e) {
    throw ExportError(mpath + " is not valid JSON: " + e.what());
  }
  try {
    const json* meta = nullptr;
    if (m.contains("pipeline") && m["pipeline"].contains("patch")) meta = &m["pipeline"]["patch"];
    if (!meta || meta->empty())
      throw ExportError(dir + " holds no patch-shuffle model settings; export it with `semgir-engine export "
                              "--components patch_cnn --out " + dir + "`");
    if (meta->value("format", "") != kModelFormat)
      throw ExportError(dir + ": patch settings of an unknown format " + meta->value("format", json()).dump());
    if (meta->value("format_version", 0) != 1)
      throw ExportError(dir + ": patch settings format_version " + meta->value("format_version", json()).dump() +
                        " not supported (supported: 1)");
    const json& pp = meta->at("preprocessing");
    pre_.size = pp.at("size").get<int>();
    pre_.fit = pp.at("fit").get<std::string>();
    for (int c = 0; c < 3; ++c) {  // float32 like numpy's asarray(cfg.mean, dtype=float32)
      pre_.mean[c] = float(pp.at("mean").at(c).get<double>());
      pre_.std[c] = float(pp.at("std").at(c).get<double>());
    }
    pre_.short_side = pp.contains("short_side") ? pp.at("short_side").get<int>() : 0;
    if (pre_.fit != "pad" && pre_.fit != "resize" && pre_.fit != "short")
      throw UnsupportedError("patch preprocessing fit '" + pre_.fit + "' is not implemented natively (pad, resize, "
                             "short); use the Python runtime for this model");
    if (pre_.size <= 0) throw ExportError(dir + ": preprocessing size must be positive");
    if (pre_.fit == "short" && pre_.short_side < pre_.size)
      throw ExportError(dir + ": fit 'short' needs short_side >= size, got " + std::to_string(pre_.short_side) +
                        " < " + std::to_string(pre_.size));
    int k = meta->contains("test_time") ? (*meta)["test_time"].value("k_shuffles", 0) : 0;
    if (k != 0)
      throw UnsupportedError("test-time shuffle averaging (k_shuffles=" + std::to_string(k) +
                             ") runs on the torch backend only");
    threshold_ = meta->at("threshold").get<double>();
    const double temperature = meta->at("temperature").get<double>();
    if (!(threshold_ >= 0.0 && threshold_ <= 1.0) || !(temperature > 0.0))
      throw ExportError(dir + ": threshold must be in [0, 1] and temperature > 0");
    calibration_.temperature = temperature;
    // a "calibration" entry (temperature or isotonic, calibration/decision.py:Calibrator) wins over the
    // bare temperature, as in engine/patch/detector.py:PatchRuntime
    if (meta->contains("calibration") && !(*meta)["calibration"].is_null() && !(*meta)["calibration"].empty()) {
      const json& c = (*meta)["calibration"];
      calibration_.method = c.at("method").get<std::string>();
      calibration_.temperature = c.contains("temperature") ? c.at("temperature").get<double>() : 1.0;
      if (c.contains("x")) calibration_.x = c.at("x").get<std::vector<double>>();
      if (c.contains("y")) calibration_.y = c.at("y").get<std::vector<double>>();
      if (calibration_.method != "temperature" && calibration_.method != "isotonic")
        throw ExportError(dir + ": bad calibration entry: unknown calibration method '" + calibration_.method +
                          "'; valid: temperature, isotonic");
      if (calibration_.method == "isotonic" &&
          (calibration_.x.empty() || calibration_.x.size() != calibration_.y.size()))
        throw ExportError(dir + ": bad calibration entry: isotonic calibration needs matching, non-empty breakpoints");
      for (size_t i = 1; calibration_.method == "isotonic" && i < calibration_.x.size(); ++i)
        if (!(calibration_.x[i] > calibration_.x[i - 1]))
          throw ExportError(dir + ": bad calibration entry: isotonic breakpoints must increase");
      if (!(calibration_.temperature > 0.0))
        throw ExportError(dir + ": bad calibration entry: temperature must be > 0");
    }
    std::string weights = meta->value("weights_sha256", "");

    const json* entries = nullptr;
    if (m.contains("components") && m["components"].contains(kComponent)) entries = &m["components"][kComponent];
    if (!entries || entries->empty()) {
      std::string have;
      if (m.contains("components"))
        for (auto& [name, _] : m["components"].items()) have += (have.empty() ? "" : ", ") + name;
      throw ExportError(dir + " holds no 'patch_cnn' graph (has: " + have +
                        "); export it with `semgir-engine export --components patch_cnn`");
    }
    // bf16 (OpenVINO) runs the fp32 graph with bf16 inference precision
    const std::string graph_precision = opt.precision == "bf16" ? "fp32" : opt.precision;
    const json* entry = entries->contains(graph_precision) ? &(*entries)[graph_precision] : &entries->begin().value();
    std::string precision = opt.precision == "bf16" ? "bf16" : entry->value("precision", opt.precision);
    std::string graph = dir + "/" + entry->at("file").get<std::string>();
    if (!is_file(graph)) throw ExportError(graph + " is listed in the manifest but missing");
    if (opt.verify_hashes) {
      json files = entry->contains("files") ? (*entry)["files"]
                                            : json::array({{{"file", (*entry)["file"]}, {"sha256", (*entry)["sha256"]}}});
      for (auto& f : files) {
        std::string p = dir + "/" + f.at("file").get<std::string>();
        if (file_sha256(p) != f.at("sha256").get<std::string>())
          throw ExportError(f.at("file").get<std::string>() +
                            ": sha256 differs from the manifest (corrupt or replaced); re-export");
      }
    }
    std::string graph_sha = entry->contains("source") ? (*entry)["source"].value("weights_sha256", "") : "";
    if (graph_sha != weights)
      throw ExportError(dir + ": the patch_cnn graph and the patch settings come from different models (weights " +
                        graph_sha.substr(0, 12) + " vs " + weights.substr(0, 12) +
                        "); re-export with `semgir-engine export --components patch_cnn --force`");
    version_ = meta->at("version").is_string() ? meta->at("version").get<std::string>() : meta->at("version").dump();
    if (precision != "fp32") version_ += "+" + precision;
    SessionOptions so = opt.session;
    so.bf16 = opt.precision == "bf16";
    if (opt.runtime == "onnxruntime") session_ = make_onnxruntime_session(graph, so);
    else if (opt.runtime == "openvino") session_ = make_openvino_session(graph, so);
    else throw UnsupportedError("unknown runtime '" + opt.runtime + "' (valid: onnxruntime, openvino)");
    runtime_desc_ = session_->describe();
    // the graph's interface is what this runtime feeds (the manifest's spec digest is Python's to check)
    if (session_->input_names() != std::vector<std::string>{"pixel_values"} ||
        session_->output_names() != std::vector<std::string>{"logit"})
      throw ExportError(graph + ": patch_cnn graph inputs/outputs are not (pixel_values) -> (logit); re-export it with "
                        "`semgir-engine export --components patch_cnn --force`");
  } catch (const json::exception& e) {
    throw ExportError(mpath + ": malformed patch settings: " + e.what());
  }
}

std::vector<uint8_t> PatchModel::fit_and_crop(const RgbImage& im) const {
  // engine/patch/preprocess.py: crop(fit_min_side(img, size, fit, short_side), size), centre crop
  const int S = pre_.size, h = im.height, w = im.width;
  std::vector<uint8_t> out(size_t(S) * S * 3);
  if (pre_.fit == "pad" || (pre_.fit == "resize" && h >= S && w >= S)) {
    // zero padding (image centred) when a side is short, then the centre crop
    const int ph = std::max(S - h, 0), pw = std::max(S - w, 0);
    const int H = h + ph, W = w + pw;
    const int top = (H - S) / 2, left = (W - S) / 2;
    for (int y = 0; y < S; ++y) {
      const int sy = y + top - ph / 2;
      for (int xx = 0; xx < S; ++xx) {
        const int sx = xx + left - pw / 2;
        const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
        uint8_t* o = &out[(size_t(y) * S + xx) * 3];
        if (inside) std::memcpy(o, &im.rgb[(size_t(sy) * w + sx) * 3], 3);
        else o[0] = o[1] = o[2] = 0;
      }
    }
    return out;
  }
  // "resize": bilinear upscale so both sides are >= size; "short": bicubic resize of the short side to
  // exactly short_side (engine/patch/leaks.py:resize_short_side). Sizes as Python computes them:
  // true division, then round() half to even (nearbyint in the default rounding mode).
  const bool short_fit = pre_.fit == "short";
  const int target = short_fit ? pre_.short_side : S;
  const double s = double(target) / double(std::min(h, w));
  const double fw = std::nearbyint(double(w) * s), fh = std::nearbyint(double(h) * s);
  if (!(fw < double(1 << 26) && fh < double(1 << 26)))
    throw InputError("image of " + std::to_string(w) + " x " + std::to_string(h) +
                     " pixels is too elongated to resize for the patch model");
  const int nw = std::max(target, int(fw)), nh = std::max(target, int(fh));
  if (nw == w && nh == h) {  // already the right size: the centre crop of the image itself
    const int top = (h - S) / 2, left = (w - S) / 2;
    for (int y = 0; y < S; ++y)
      std::memcpy(&out[size_t(y) * S * 3], &im.rgb[(size_t(top + y) * w + left) * 3], size_t(S) * 3);
    return out;
  }
  // only the centre crop of the resized image is computed: each output pixel has its own weights
  return resize_rgb_window(im.rgb.data(), w, h, nw, nh, short_fit ? ResampleFilter::Bicubic : ResampleFilter::Bilinear,
                           (nw - S) / 2, (nh - S) / 2, S, S);
}

std::vector<float> PatchModel::prepare(const std::vector<const RgbImage*>& images) const {
  const int S = pre_.size;
  const size_t plane = size_t(S) * S;
  std::vector<float> x(images.size() * 3 * plane);
  const float scale = float(1.0 / 255.0);
  for (size_t n = 0; n < images.size(); ++n) {
    const std::vector<uint8_t> crop = fit_and_crop(*images[n]);
    float* out = x.data() + n * 3 * plane;
    for (size_t i = 0; i < plane; ++i)
      for (int c = 0; c < 3; ++c) {
        float v = float(crop[i * 3 + c]) * scale;  // (x / 255 - mean) / std, in float32 like numpy
        v -= pre_.mean[c];
        v /= pre_.std[c];
        out[c * plane + i] = v;
      }
  }
  return x;
}

double Calibration::operator()(double logit) const {
  const double z = logit;
  if (method == "temperature") {
    // sigmoid(z / T) = exp(-logaddexp(0, -z / T)) (calibration/temperature.py:sigmoid)
    const double t = z / temperature;
    const double a = -t;
    const double lae = a > 0 ? a + std::log1p(std::exp(-a)) : std::log1p(std::exp(a));
    return std::exp(-lae);
  }
  // numpy.interp(z, x, y): clamped to y[0] / y[-1] outside, linear between the breakpoints
  const size_t n = x.size();
  if (std::isnan(z)) return n == 1 ? y[0] : z;
  if (n == 1 || z < x[0]) return y[0];
  if (z > x[n - 1]) return y[n - 1];
  const size_t j = size_t(std::upper_bound(x.begin(), x.end(), z) - x.begin()) - 1;  // x[j] <= z < x[j+1]
  if (j == n - 1 || x[j] == z) return y[j];
  const double slope = (y[j + 1] - y[j]) / (x[j + 1] - x[j]);
  double r = slope * (z - x[j]) + y[j];
  if (std::isnan(r)) {
    r = slope * (z - x[j + 1]) + y[j + 1];
    if (std::isnan(r) && y[j] == y[j + 1]) r = y[j];
  }
  return r;
}

double PatchModel::calibrate(double logit) const { return calibration_(logit); }

std::vector<double> PatchModel::predict(const std::vector<const RgbImage*>& images) {
  if (images.empty()) return {};
  Tensor in{"pixel_values", {int64_t(images.size()), 3, pre_.size, pre_.size}, prepare(images)};
  auto out = session_->run({in}, {"logit"});
  if (out.size() != 1 || out[0].data.size() != images.size())
    throw RuntimeError("patch_cnn returned " + std::to_string(out.empty() ? 0 : out[0].data.size()) +
                       " logits for " + std::to_string(images.size()) + " images");
  std::vector<double> p(images.size());
  for (size_t i = 0; i < p.size(); ++i) p[i] = calibrate(double(out[0].data[i]));
  return p;
}

}  // namespace semgir
