#include "patch.hpp"

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
    if (pre_.fit != "pad")
      throw UnsupportedError("patch preprocessing fit '" + pre_.fit + "' is not implemented natively (only 'pad'); "
                             "use the Python runtime for this model");
    if (pre_.size <= 0) throw ExportError(dir + ": preprocessing size must be positive");
    int k = meta->contains("test_time") ? (*meta)["test_time"].value("k_shuffles", 0) : 0;
    if (k != 0)
      throw UnsupportedError("test-time shuffle averaging (k_shuffles=" + std::to_string(k) +
                             ") runs on the torch backend only");
    threshold_ = meta->at("threshold").get<double>();
    temperature_ = meta->at("temperature").get<double>();
    if (!(threshold_ >= 0.0 && threshold_ <= 1.0) || !(temperature_ > 0.0))
      throw ExportError(dir + ": threshold must be in [0, 1] and temperature > 0");
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

std::vector<float> PatchModel::prepare(const std::vector<const RgbImage*>& images) const {
  const int S = pre_.size;
  const size_t plane = size_t(S) * S;
  std::vector<float> x(images.size() * 3 * plane);
  const float scale = float(1.0 / 255.0);
  for (size_t n = 0; n < images.size(); ++n) {
    const RgbImage& im = *images[n];
    // fit_min_side(pad): zero padding, image centred; then the centre crop
    const int ph = std::max(S - im.height, 0), pw = std::max(S - im.width, 0);
    const int H = im.height + ph, W = im.width + pw;
    const int top = (H - S) / 2, left = (W - S) / 2;
    float* out = x.data() + n * 3 * plane;
    for (int y = 0; y < S; ++y) {
      const int sy = y + top - ph / 2;
      for (int xx = 0; xx < S; ++xx) {
        const int sx = xx + left - pw / 2;
        const bool inside = sy >= 0 && sy < im.height && sx >= 0 && sx < im.width;
        const uint8_t* p = inside ? &im.rgb[(size_t(sy) * im.width + sx) * 3] : nullptr;
        for (int c = 0; c < 3; ++c) {
          float v = float(p ? p[c] : 0) * scale;  // (x / 255 - mean) / std, in float32 like numpy
          v -= pre_.mean[c];
          v /= pre_.std[c];
          out[c * plane + size_t(y) * S + xx] = v;
        }
      }
    }
  }
  return x;
}

double PatchModel::calibrate(double logit) const {
  // p = exp(-logaddexp(0, -z)), z = logit / T (engine/patch/detector.py:PatchRuntime.calibrate)
  const double z = logit / temperature_;
  const double a = -z;
  const double lae = a > 0 ? a + std::log1p(std::exp(-a)) : std::log1p(std::exp(a));
  return std::exp(-lae);
}

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
