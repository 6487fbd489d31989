// semgir-score: score images with libsemgir over an export directory; one JSON line per input with
// the field names and meaning of `semgir-engine score` (jsonl). Exit status as the Python CLI:
// 0 all scored; 3 finished but some inputs failed; 1 fatal error; 2 usage error.
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "semgir.hpp"

namespace {

constexpr int kOk = 0, kFatal = 1, kUsage = 2, kPartial = 3;

const char* kUsageText =
    "usage: semgir-score --export-dir DIR [--method patch|semgir] [--runtime onnxruntime|openvino]\n"
    "                    [--precision fp32|fp16|bf16] [--batch-size N] [--threads N]\n"
    "                    [--steps N] [--seed N] [--guidance-scale G] [--max-new-tokens N] [--num-beams N] PATH...\n"
    "Score images (files or folders, walked recursively); one JSON line per input on stdout.\n";

// engine/images.py:IMAGE_EXTENSIONS
const std::set<std::string> kExtensions = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif",
                                           ".tif", ".tiff", ".ppm", ".pgm", ".pnm"};

bool is_dir(const std::string& p, struct stat* st) { return ::stat(p.c_str(), st) == 0 && S_ISDIR(st->st_mode); }

std::string lower_ext(const std::string& name) {
  auto dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0) return "";
  std::string e = name.substr(dot);
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return e;
}

// os.walk(followlinks=True) order as engine/walk.py: a folder's files (sorted), then its subfolders
// (sorted), each real folder visited once.
void walk(const std::string& root, std::set<std::pair<dev_t, ino_t>>& seen, std::vector<std::string>& out) {
  struct stat st;
  if (::stat(root.c_str(), &st) != 0) return;
  if (!seen.insert({st.st_dev, st.st_ino}).second) {
    std::cerr << "warning: skipping " << root << ": already visited (symlink loop or duplicate)\n";
    return;
  }
  DIR* d = ::opendir(root.c_str());
  if (!d) return;
  std::vector<std::string> files, dirs;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string full = root + (root.back() == '/' ? "" : "/") + name;
    struct stat cst;
    if (is_dir(full, &cst)) dirs.push_back(name);
    else files.push_back(name);
  }
  ::closedir(d);
  std::sort(files.begin(), files.end());
  std::sort(dirs.begin(), dirs.end());
  for (auto& f : files)
    if (kExtensions.count(lower_ext(f))) out.push_back(root + (root.back() == '/' ? "" : "/") + f);
  for (auto& s : dirs) walk(root + (root.back() == '/' ? "" : "/") + s, seen, out);
}

nlohmann::ordered_json row(const std::string& path, const semgir::Result& r, const std::string& version,
                           const std::string& method, bool random_weights, const semgir_details* d) {
  using json = nlohmann::ordered_json;
  json j;
  const bool ok = r.ok();
  j["path"] = path;
  j["sha256"] = ok && r.sha256[0] ? json(r.sha256) : json(nullptr);
  j["p_ai"] = ok ? json(r.p_ai) : json(nullptr);
  j["label"] = ok && r.label_name() ? json(r.label_name()) : json(nullptr);
  j["method"] = method;
  j["model_version"] = version;
  j["random_weights"] = random_weights;
  j["caption"] = ok && method == "semgir" ? json(d->caption) : json(nullptr);
  j["error"] = ok ? json(nullptr) : json(r.error);
  j["note"] = ok && r.note[0] ? json(r.note) : json(nullptr);
  j["width"] = ok ? json(r.width) : json(nullptr);
  j["height"] = ok ? json(r.height) : json(nullptr);
  if (!ok) j["timings_ms"] = json::object();
  else if (method == "semgir")
    j["timings_ms"] = json{{"decode", r.decode_ms}, {"caption", d->caption_ms}, {"regenerate", d->regenerate_ms},
                           {"embed", d->embed_ms}, {"head", d->head_ms}};
  else j["timings_ms"] = json{{"decode", r.decode_ms}, {"patch", r.model_ms}};
  j["attribution"] = nullptr;
  j["generator"] = nullptr;
  // the cascade's fields (semgir_engine.results.Result): this runner is the patch method, no cascade
  j["stage"] = nullptr;
  j["p_patch"] = nullptr;
  j["p_semgir"] = nullptr;
  j["regeneration"] = nullptr;
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  std::string export_dir, method = "patch", runtime = "onnxruntime", precision = "fp32";
  int batch = 8, threads = 0, steps = 4, max_new_tokens = 20, num_beams = 1;
  long long seed = 0;
  double guidance = 1.0;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) {
        std::cerr << kUsageText << "error: " << name << " needs a value\n";
        std::exit(kUsage);
      }
      return argv[++i];
    };
    try {
      if (a == "-h" || a == "--help") { std::cout << kUsageText; return kOk; }
      if (a == "--version") { std::cout << "semgir-score " << semgir_version() << " (runtimes: " << semgir_runtimes() << ")\n"; return kOk; }
      if (a == "--export-dir") export_dir = value("--export-dir");
      else if (a == "--method") method = value("--method");
      else if (a == "--runtime") runtime = value("--runtime");
      else if (a == "--precision") precision = value("--precision");
      else if (a == "--batch-size" || a == "-b") batch = std::stoi(value("--batch-size"));
      else if (a == "--threads") threads = std::stoi(value("--threads"));
      else if (a == "--steps") steps = std::stoi(value("--steps"));
      else if (a == "--seed") seed = std::stoll(value("--seed"));
      else if (a == "--guidance-scale") guidance = std::stod(value("--guidance-scale"));
      else if (a == "--max-new-tokens") max_new_tokens = std::stoi(value("--max-new-tokens"));
      else if (a == "--num-beams") num_beams = std::stoi(value("--num-beams"));
      else if (a == "--") { for (++i; i < argc; ++i) paths.push_back(argv[i]); }
      else if (a.size() > 1 && a[0] == '-') { std::cerr << kUsageText << "error: unknown option " << a << "\n"; return kUsage; }
      else paths.push_back(a);
    } catch (const std::exception&) {
      std::cerr << kUsageText << "error: " << a << " needs a number\n";
      return kUsage;
    }
  }
  if (export_dir.empty() || paths.empty()) { std::cerr << kUsageText << "error: --export-dir and at least one PATH are required\n"; return kUsage; }
  if (method != "patch" && method != "semgir") { std::cerr << "error: --method must be patch or semgir\n"; return kUsage; }
  if (runtime != "onnxruntime" && runtime != "openvino") { std::cerr << "error: --runtime must be onnxruntime or openvino\n"; return kUsage; }
  if (precision != "fp32" && precision != "fp16" && precision != "bf16") { std::cerr << "error: --precision must be fp32, fp16 or bf16\n"; return kUsage; }
  if (steps < 1 || num_beams < 1) { std::cerr << "error: --steps and --num-beams must be >= 1\n"; return kUsage; }
  if (batch < 1 || threads < 0) { std::cerr << "error: --batch-size must be >= 1 and --threads >= 0\n"; return kUsage; }

  std::vector<std::string> inputs;
  std::set<std::pair<dev_t, ino_t>> seen;
  for (auto& p : paths) {
    struct stat st;
    if (is_dir(p, &st)) walk(p, seen, inputs);
    else inputs.push_back(p);  // named files are always tried (a bad one becomes an error row)
  }
  try {
    semgir::Options opt;
    opt.method(method == "semgir" ? SEMGIR_METHOD_SEMGIR : SEMGIR_METHOD_PATCH)
        .runtime(runtime == "openvino" ? SEMGIR_RUNTIME_OPENVINO : SEMGIR_RUNTIME_ONNXRUNTIME)
        .precision(precision)
        .intra_threads(threads)
        .steps(steps)
        .seed(seed)
        .guidance_scale(guidance)
        .max_new_tokens(max_new_tokens)
        .num_beams(num_beams);
    semgir::Engine engine(export_dir, opt);
    const std::string version = engine.model_version();
    const bool random_weights = engine.random_weights();
    if (random_weights)
      std::cerr << "warning: RANDOM WEIGHTS: " << method << " scores are meaningless (timing and parity only); labels "
                   "are withheld\n";
    size_t failed = 0;
    double decode_ms = 0, model_ms = 0;
    for (size_t i = 0; i < inputs.size(); i += size_t(batch)) {
      std::vector<std::string> chunk(inputs.begin() + i, inputs.begin() + std::min(inputs.size(), i + batch));
      std::vector<semgir_details> details;
      auto results = engine.score_files(chunk, &details);
      for (size_t k = 0; k < chunk.size(); ++k) {
        failed += !results[k].ok();
        decode_ms += results[k].decode_ms;
        model_ms += results[k].ok() ? results[k].model_ms : 0.0;
        std::cout << row(chunk[k], results[k], version, method, random_weights, &details[k]).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                  << "\n" << std::flush;
      }
    }
    std::cerr << "scored " << inputs.size() - failed << " of " << inputs.size() << " inputs (" << failed
              << " failed) with " << version << " on " << engine.runtime() << "; decode " << decode_ms
              << " ms, " << method << " " << model_ms << " ms\n";
    return failed ? kPartial : kOk;
  } catch (const semgir::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return e.code() == SEMGIR_E_INVALID_ARGUMENT ? kUsage : kFatal;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kFatal;
  }
}
