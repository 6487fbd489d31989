// C API tests: parity with the Python runtime on the fixture image matrix (pixels, notes, p_ai
// within 1e-5, labels; the default model, patch-shuffle and a fit-resize / isotonic variant), the bad-input matrix (one error each, no crash), open errors, batches,
// threads, and the C++ wrapper. Fixtures: tests/native_fixtures.py (run by ctest first).
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "semgir.h"
#include "semgir.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string testdata() {
  const char* env = std::getenv("SEMGIR_TESTDATA");
  return env ? env : SEMGIR_TESTDATA;
}
std::string export_dir() { return testdata() + "/export"; }
std::string image(const std::string& name) { return testdata() + "/images/" + name; }

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const json& expected() {
  static json e = json::parse(slurp(testdata() + "/expected.json"));
  return e;
}

std::string sha256(const void* p, size_t n) {
  unsigned char md[32];
  unsigned len = 0;
  EVP_Digest(p, n, md, &len, EVP_sha256(), nullptr);
  char hex[65];
  for (int i = 0; i < 32; ++i) std::snprintf(hex + 2 * i, 3, "%02x", md[i]);
  return hex;
}

bool native_unsupported(const std::string& name) {
  for (auto& n : expected()["native_unsupported"])
    if (n == name) return true;
  return false;
}

// Every fixture Python decodes (and the native decoder supports): p_ai within 1e-5, same label.
void expect_scores_match(semgir::Engine& eng, const char* p_key, const char* label_key) {
  size_t compared = 0;
  double worst = 0;
  for (auto& [name, x] : expected()["images"].items()) {
    if (!x["ok"].get<bool>() || native_unsupported(name)) continue;
    SCOPED_TRACE(name);
    auto r = eng.score_file(image(name));
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_NEAR(r.p_ai, x[p_key].get<double>(), 1e-5);
    EXPECT_EQ(std::string(r.label_name()), x[label_key].get<std::string>());
    worst = std::max(worst, std::fabs(r.p_ai - x[p_key].get<double>()));
    ++compared;
  }
  EXPECT_GE(compared, 30u);
  std::printf("%s (%s): %zu images, max |p_ai - Python| %.2e\n", eng.model_version().c_str(), eng.runtime().c_str(),
              compared, worst);
}

class Api : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    semgir_options o;
    semgir_options_init(&o);
    o.intra_threads = 1;
    ASSERT_EQ(semgir_open(export_dir().c_str(), &o, &eng_), SEMGIR_OK) << semgir_last_error();
  }
  static void TearDownTestSuite() {
    semgir_close(eng_);
    eng_ = nullptr;
  }
  static semgir_engine* eng_;
};
semgir_engine* Api::eng_ = nullptr;

TEST(Version, Reported) {
  EXPECT_STRNE(semgir_version(), "");
  EXPECT_EQ(semgir_api_version(), SEMGIR_API_VERSION);
  EXPECT_NE(std::string(semgir_runtimes()).find("onnxruntime"), std::string::npos);
}

TEST(Open, ErrorsAreTypedAndExplained) {
  semgir_engine* e = reinterpret_cast<semgir_engine*>(0x1);
  EXPECT_EQ(semgir_open(export_dir().c_str(), nullptr, nullptr), SEMGIR_E_INVALID_ARGUMENT);
  EXPECT_EQ(semgir_open(nullptr, nullptr, &e), SEMGIR_E_INVALID_ARGUMENT);
  EXPECT_EQ(e, nullptr);
  EXPECT_EQ(semgir_open("/nonexistent/export", nullptr, &e), SEMGIR_E_EXPORT);
  EXPECT_NE(std::string(semgir_last_error()).find("manifest.json"), std::string::npos);

  fs::path tmp = fs::temp_directory_path() / ("semgir-open-" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  std::ofstream(tmp / "manifest.json") << "{ not json";
  EXPECT_EQ(semgir_open(tmp.c_str(), nullptr, &e), SEMGIR_E_EXPORT);
  EXPECT_NE(std::string(semgir_last_error()).find("not valid JSON"), std::string::npos);

  std::ofstream(tmp / "manifest.json") << "{\"components\": {}, \"pipeline\": {}}";
  EXPECT_EQ(semgir_open(tmp.c_str(), nullptr, &e), SEMGIR_E_EXPORT);
  EXPECT_NE(std::string(semgir_last_error()).find("no patch-shuffle model settings"), std::string::npos);

  // a graph whose bytes differ from the manifest's sha256 is refused
  fs::remove_all(tmp);
  fs::copy(export_dir(), tmp, fs::copy_options::recursive);
  for (auto& f : fs::directory_iterator(tmp))
    if (f.path().extension() == ".onnx") std::ofstream(f.path(), std::ios::app | std::ios::binary) << "x";
  EXPECT_EQ(semgir_open(tmp.c_str(), nullptr, &e), SEMGIR_E_EXPORT);
  EXPECT_NE(std::string(semgir_last_error()).find("sha256 differs"), std::string::npos);
  semgir_options o;
  semgir_options_init(&o);
  o.verify_hashes = 0;  // the tampered graph is then handed to ONNX Runtime, which must fail cleanly or load
  semgir_status s = semgir_open(tmp.c_str(), &o, &e);
  EXPECT_TRUE(s == SEMGIR_OK || s == SEMGIR_E_RUNTIME) << semgir_status_name(s);
  semgir_close(s == SEMGIR_OK ? e : nullptr);
  fs::remove_all(tmp);

  semgir_options_init(&o);
  o.method = SEMGIR_METHOD_SEMGIR;  // a patch-only export has no SemGIR settings
  EXPECT_EQ(semgir_open(export_dir().c_str(), &o, &e), SEMGIR_E_EXPORT);
  semgir_options_init(&o);
  o.precision = "int3";
  EXPECT_EQ(semgir_open(export_dir().c_str(), &o, &e), SEMGIR_E_INVALID_ARGUMENT);
  semgir_options_init(&o);
  o.struct_size = 3;
  EXPECT_EQ(semgir_open(export_dir().c_str(), &o, &e), SEMGIR_E_INVALID_ARGUMENT);
  if (std::string(semgir_runtimes()).find("openvino") == std::string::npos) {
    semgir_options_init(&o);
    o.runtime = SEMGIR_RUNTIME_OPENVINO;
    EXPECT_EQ(semgir_open(export_dir().c_str(), &o, &e), SEMGIR_E_RUNTIME);
    EXPECT_NE(std::string(semgir_last_error()).find("without OpenVINO"), std::string::npos);
  }
}

TEST_F(Api, MatchesThePythonRuntimeOnEveryFixture) {
  EXPECT_EQ(std::string(semgir_engine_model_version(eng_)), expected()["version"].get<std::string>());
  EXPECT_DOUBLE_EQ(semgir_engine_threshold(eng_), expected()["threshold"].get<double>());
  size_t compared = 0;
  double worst = 0;
  for (auto& [name, x] : expected()["images"].items()) {
    SCOPED_TRACE(name);
    semgir_result r;
    semgir_status s = semgir_score_file(eng_, image(name).c_str(), &r);
    EXPECT_EQ(s, r.status);
    if (native_unsupported(name)) {
      EXPECT_EQ(r.status, SEMGIR_E_INPUT);
      EXPECT_NE(std::string(r.error).find("not supported by the native decoder"), std::string::npos) << r.error;
      continue;
    }
    if (!x["ok"].get<bool>()) {  // Python gives an error row: so must we, and only that
      EXPECT_EQ(r.status, SEMGIR_E_INPUT) << r.error;
      EXPECT_STRNE(r.error, "");
      EXPECT_TRUE(std::isnan(r.p_ai));
      EXPECT_EQ(r.label, SEMGIR_LABEL_NONE);
      continue;
    }
    ASSERT_EQ(r.status, SEMGIR_OK) << r.error;
    EXPECT_NEAR(r.p_ai, x["p_ai"].get<double>(), 1e-5);
    worst = std::max(worst, std::fabs(r.p_ai - x["p_ai"].get<double>()));
    EXPECT_EQ(r.label == SEMGIR_LABEL_AI ? "ai" : "real", x["label"].get<std::string>());
    EXPECT_EQ(r.width, x["width"].get<int>());
    EXPECT_EQ(r.height, x["height"].get<int>());
    EXPECT_EQ(std::string(r.note), x["note"].get<std::string>());
    EXPECT_EQ(std::string(r.sha256), x["sha256"].get<std::string>());
    std::string bytes = slurp(image(name));
    semgir_image im;
    ASSERT_EQ(semgir_decode(bytes.data(), bytes.size(), 0, &im), SEMGIR_OK) << semgir_last_error();
    EXPECT_EQ(sha256(im.data, size_t(im.width) * im.height * 3), x["pixels_sha256"].get<std::string>())
        << "decoded pixels differ from Pillow's";
    semgir_image_free(&im);
    ++compared;
  }
  EXPECT_GE(compared, 30u);
  std::printf("%s (fit %s): %zu images, max |p_ai - Python ORT| %.2e\n", expected()["version"].get<std::string>().c_str(),
              expected()["preprocessing"]["fit"].get<std::string>().c_str(), compared, worst);
}

// The other export directories of the fixtures: the shipped patch-shuffle model (fit "pad") and the
// variant with fit "resize" and an isotonic calibration; p_ai within 1e-5 and the labels of Python's.
TEST(OtherModels, MatchThePythonRuntime) {
  ASSERT_GE(expected()["models"].size(), 2u);
  for (auto& [dir, m] : expected()["models"].items()) {
    SCOPED_TRACE(dir);
    semgir::Engine eng(testdata() + "/" + dir, semgir::Options().intra_threads(1));
    EXPECT_EQ(eng.model_version(), m["version"].get<std::string>());
    EXPECT_DOUBLE_EQ(eng.threshold(), m["threshold"].get<double>());
    double worst = 0;
    size_t compared = 0, ai = 0;
    for (auto& [name, x] : m["images"].items()) {
      if (native_unsupported(name)) continue;
      SCOPED_TRACE(name);
      auto r = eng.score_file(image(name));
      ASSERT_TRUE(r.ok()) << r.error;
      EXPECT_NEAR(r.p_ai, x["p_ai"].get<double>(), 1e-5);
      EXPECT_EQ(std::string(r.label_name()), x["label"].get<std::string>());
      worst = std::max(worst, std::fabs(r.p_ai - x["p_ai"].get<double>()));
      ai += x["label"] == "ai";
      ++compared;
    }
    EXPECT_GE(compared, 30u);
    std::printf("%s (fit %s, %s calibration): %zu images (%zu ai), max |p_ai - Python ORT| %.2e\n",
                m["version"].get<std::string>().c_str(), m["preprocessing"]["fit"].get<std::string>().c_str(),
                m["calibration"].get<std::string>().c_str(), compared, ai, worst);
  }
}

TEST(OtherModels, BadCalibrationAndFitAreRefusedAtOpen) {
  fs::path tmp = fs::temp_directory_path() / ("semgir-cal-" + std::to_string(::getpid()));
  const std::string src = testdata() + "/export-variant";
  const json orig = json::parse(slurp(src + "/manifest.json"));
  auto open_with = [&](const std::function<void(json&)>& edit) {
    fs::remove_all(tmp);
    fs::copy(src, tmp, fs::copy_options::recursive);
    json m = orig;
    edit(m["pipeline"]["patch"]);
    std::ofstream(tmp / "manifest.json") << m.dump();
    semgir_engine* e = nullptr;
    semgir_status s = semgir_open(tmp.c_str(), nullptr, &e);
    semgir_close(e);
    return s;
  };
  EXPECT_EQ(open_with([](json& p) { p["calibration"]["method"] = "platt"; }), SEMGIR_E_EXPORT);
  EXPECT_NE(std::string(semgir_last_error()).find("unknown calibration method"), std::string::npos);
  EXPECT_EQ(open_with([](json& p) { p["calibration"]["y"] = json::array({0.5}); }), SEMGIR_E_EXPORT);
  EXPECT_EQ(open_with([](json& p) { p["calibration"]["x"] = json::array(); p["calibration"]["y"] = json::array(); }),
            SEMGIR_E_EXPORT);
  EXPECT_EQ(open_with([](json& p) { p["preprocessing"]["fit"] = "stretch"; }), SEMGIR_E_UNSUPPORTED);
  EXPECT_EQ(open_with([](json& p) {
              p["preprocessing"]["fit"] = "short";
              p["preprocessing"]["short_side"] = 100;
            }),
            SEMGIR_E_EXPORT);
  EXPECT_NE(std::string(semgir_last_error()).find("short_side >= size"), std::string::npos);
  // a temperature calibration entry wins over the bare temperature; an empty one falls back to it
  EXPECT_EQ(open_with([](json& p) { p["calibration"] = json::object({{"method", "temperature"}, {"temperature", 2.0}}); }),
            SEMGIR_OK);
  EXPECT_EQ(open_with([](json& p) { p["calibration"] = json::object(); }), SEMGIR_OK);
  fs::remove_all(tmp);
}

TEST_F(Api, BadInputMatrixGivesOneErrorEach) {
  semgir_result r;
  EXPECT_EQ(semgir_score_encoded(eng_, nullptr, 0, &r), SEMGIR_E_INPUT);
  EXPECT_STREQ(r.error, "empty file (0 bytes)");
  EXPECT_EQ(semgir_score_encoded(eng_, nullptr, 10, &r), SEMGIR_E_INPUT);
  const char junk[] = "\xff\xd8\xff\xe0 definitely not a jpeg";
  EXPECT_EQ(semgir_score_encoded(eng_, junk, sizeof junk, &r), SEMGIR_E_INPUT);
  const char png_magic[] = "\x89PNG\r\n\x1a\n";
  EXPECT_EQ(semgir_score_encoded(eng_, png_magic, 8, &r), SEMGIR_E_INPUT);
  const char riff[] = "RIFF\x04\0\0\0WEBPVP8 ";
  EXPECT_EQ(semgir_score_encoded(eng_, riff, sizeof riff, &r), SEMGIR_E_INPUT);
  EXPECT_EQ(semgir_score_file(eng_, "/nonexistent/a.jpg", &r), SEMGIR_E_INPUT);
  EXPECT_NE(std::string(r.error).find("file not found"), std::string::npos);
  EXPECT_EQ(semgir_score_file(eng_, testdata().c_str(), &r), SEMGIR_E_INPUT);
  EXPECT_NE(std::string(r.error).find("is a directory"), std::string::npos);
  EXPECT_EQ(semgir_score_file(eng_, nullptr, &r), SEMGIR_E_INVALID_ARGUMENT);
  EXPECT_EQ(semgir_score_file(nullptr, image("png_rgb.png").c_str(), &r), SEMGIR_E_INVALID_ARGUMENT);
  EXPECT_EQ(semgir_score_file(eng_, image("png_rgb.png").c_str(), nullptr), SEMGIR_E_INVALID_ARGUMENT);
  semgir_rgb_image none{nullptr, 10, 10, 0};
  EXPECT_EQ(semgir_score_rgb(eng_, &none, &r), SEMGIR_E_INPUT);
  std::vector<uint8_t> px(30 * 20 * 3, 128);
  semgir_rgb_image narrow{px.data(), 30, 20, 10};
  EXPECT_EQ(semgir_score_rgb(eng_, &narrow, &r), SEMGIR_E_INPUT);
  semgir_rgb_image zero{px.data(), 0, 20, 0};
  EXPECT_EQ(semgir_score_rgb(eng_, &zero, &r), SEMGIR_E_INPUT);
  // every prefix of a valid JPEG and PNG: an error or a score, never a crash
  for (const char* name : {"jpeg_rgb_q90.jpg", "png_rgba.png", "webp_lossy_alpha.webp", "jpeg_progressive.jpg"}) {
    std::string b = slurp(image(name));
    for (size_t n = 0; n < b.size(); n += 1 + b.size() / 23) {
      semgir_status s = semgir_score_encoded(eng_, b.data(), n, &r);
      EXPECT_TRUE(s == SEMGIR_E_INPUT) << name << " cut at " << n << ": " << semgir_status_name(s);
    }
  }
}

TEST(Decode, MutatedFilesNeverCrash) {
  // random byte flips and cuts of every format: a decode error or an image, nothing else (run under ASan too)
  uint32_t state = 12345;
  auto next = [&] { state = state * 1664525u + 1013904223u; return state >> 8; };
  for (const char* name : {"jpeg_rgb_q90.jpg", "jpeg_progressive.jpg", "jpeg_cmyk.jpg", "png_rgba.png",
                           "gif_transparent.gif", "gif_animated.gif", "gif_frame_offset.gif",
                           "png_palette_trns.png", "png_grey16.png", "png_animated.png", "webp_lossy_alpha.webp",
                           "webp_animated.webp", "jpeg_exif_orientation_6.jpg", "png_exif_orientation_6.png"}) {
    const std::string orig = slurp(image(name));
    for (int k = 0; k < 60; ++k) {
      std::string b = orig;
      int flips = 1 + int(next() % 8);
      for (int f = 0; f < flips; ++f) b[next() % b.size()] = char(next() & 0xFF);
      if (k % 3 == 0) b.resize(next() % b.size());
      semgir_image im;
      semgir_status s = semgir_decode(b.data(), b.size(), 0, &im);
      ASSERT_TRUE(s == SEMGIR_OK || s == SEMGIR_E_INPUT) << name << " mutation " << k << ": " << semgir_last_error();
      if (s == SEMGIR_OK) {
        EXPECT_GT(im.width, 0);
        EXPECT_GT(im.height, 0);
        semgir_image_free(&im);
      }
    }
  }
}

TEST(Limits, BombAndSizeGuardsFollowTheOptions) {
  semgir::Engine eng(export_dir(), semgir::Options().max_pixels(200 * 100).max_bytes(100000));
  auto r = eng.score_file(image("jpeg_rgb_q90.jpg"));
  EXPECT_EQ(r.status, SEMGIR_E_INPUT);
  EXPECT_NE(std::string(r.error).find("decompression-bomb guard"), std::string::npos) << r.error;
  r = eng.score_file(image("png_rgb16.png"));
  EXPECT_NE(std::string(r.error).find("file too large"), std::string::npos) << r.error;
  r = eng.score_file(image("jpeg_small.jpg"));  // 120 x 90 fits
  EXPECT_TRUE(r.ok()) << r.error;
}

TEST_F(Api, BatchEqualsSingleAndFailsOnlyTheBadItems) {
  std::vector<std::string> names;
  for (auto& [name, x] : expected()["images"].items()) names.push_back(name);
  std::vector<std::string> paths;
  for (auto& n : names) paths.push_back(image(n));
  std::vector<const char*> c;
  for (auto& p : paths) c.push_back(p.c_str());
  std::vector<semgir_result> batch(c.size());
  EXPECT_EQ(semgir_score_files(eng_, c.data(), c.size(), batch.data()), SEMGIR_E_PARTIAL);
  for (size_t i = 0; i < c.size(); ++i) {
    SCOPED_TRACE(names[i]);
    semgir_result one;
    semgir_score_file(eng_, c[i], &one);
    EXPECT_EQ(one.status, batch[i].status);
    if (one.status == SEMGIR_OK) {
      EXPECT_NEAR(one.p_ai, batch[i].p_ai, 1e-6);
    }
  }
  EXPECT_EQ(semgir_score_files(eng_, c.data(), 0, batch.data()), SEMGIR_OK);
}

TEST_F(Api, EncodedRgbAndFileInputsAgree) {
  for (const char* name : {"jpeg_exif_orientation_6.jpg", "png_rgba.png", "webp_lossy.webp", "jpeg_small.jpg"}) {
    SCOPED_TRACE(name);
    std::string b = slurp(image(name));
    semgir_result f, enc, rgb;
    ASSERT_EQ(semgir_score_file(eng_, image(name).c_str(), &f), SEMGIR_OK);
    ASSERT_EQ(semgir_score_encoded(eng_, b.data(), b.size(), &enc), SEMGIR_OK);
    semgir_image im;
    ASSERT_EQ(semgir_decode(b.data(), b.size(), 0, &im), SEMGIR_OK);
    // a padded stride exercises the row copy
    const int stride = im.width * 3 + 7;
    std::vector<uint8_t> padded(size_t(stride) * im.height, 0xAB);
    for (int y = 0; y < im.height; ++y) std::memcpy(&padded[size_t(y) * stride], im.data + size_t(y) * im.width * 3, im.width * 3);
    semgir_rgb_image view{padded.data(), im.width, im.height, stride};
    ASSERT_EQ(semgir_score_rgb(eng_, &view, &rgb), SEMGIR_OK);
    semgir_image_free(&im);
    EXPECT_EQ(f.p_ai, enc.p_ai);
    EXPECT_NEAR(f.p_ai, rgb.p_ai, 1e-12);
    EXPECT_EQ(f.width, rgb.width);
    EXPECT_EQ(std::string(f.sha256), std::string(enc.sha256));
  }
  // batch of encoded buffers and of RGB images
  std::string a = slurp(image("jpeg_rgb_q90.jpg")), b = slurp(image("bad_truncated.jpg"));
  const void* data[] = {a.data(), b.data()};
  size_t sizes[] = {a.size(), b.size()};
  semgir_result rs[2];
  EXPECT_EQ(semgir_score_encoded_batch(eng_, data, sizes, 2, rs), SEMGIR_E_PARTIAL);
  EXPECT_EQ(rs[0].status, SEMGIR_OK);
  EXPECT_EQ(rs[1].status, SEMGIR_E_INPUT);
  std::vector<uint8_t> grey(64 * 48 * 3, 100);
  semgir_rgb_image imgs[] = {{grey.data(), 64, 48, 0}, {nullptr, 1, 1, 0}};
  EXPECT_EQ(semgir_score_rgb_batch(eng_, imgs, 2, rs), SEMGIR_E_PARTIAL);
  EXPECT_EQ(rs[0].status, SEMGIR_OK);
  EXPECT_EQ(rs[1].status, SEMGIR_E_INPUT);
}

TEST_F(Api, OneHandleServesManyThreads) {
  std::vector<std::string> names = {"jpeg_rgb_q90.jpg", "png_rgba.png", "webp_lossy.webp", "png_grey16.png",
                                    "jpeg_cmyk.jpg", "bad_truncated.png"};
  std::vector<semgir_result> ref(names.size());
  for (size_t i = 0; i < names.size(); ++i) semgir_score_file(eng_, image(names[i]).c_str(), &ref[i]);
  std::vector<int> bad(4, 0);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep)
        for (size_t i = 0; i < names.size(); ++i) {
          semgir_result r;
          semgir_score_file(eng_, image(names[(i + t) % names.size()]).c_str(), &r);
          const auto& want = ref[(i + t) % names.size()];
          if (r.status != want.status || (r.status == SEMGIR_OK && std::fabs(r.p_ai - want.p_ai) > 1e-9)) ++bad[t];
        }
    });
  for (auto& t : ts) t.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(bad[t], 0) << "thread " << t;
}

TEST(OpenVino, SameScoresAsThePythonOnnxRuntimeBackend) {
  if (std::string(semgir_runtimes()).find("openvino") == std::string::npos)
    GTEST_SKIP() << "built without OpenVINO";
  semgir::Engine eng(export_dir(), semgir::Options().runtime(SEMGIR_RUNTIME_OPENVINO).intra_threads(1));
  EXPECT_NE(eng.runtime().find("openvino"), std::string::npos);
  expect_scores_match(eng, "p_ai", "label");
  auto rs = eng.score_files({image("jpeg_rgb_q90.jpg"), image("png_rgba.png"), image("bad_empty.jpg")});
  EXPECT_TRUE(rs[0].ok() && rs[1].ok() && !rs[2].ok());

  // bf16 inference precision: the reduced precision keeps the decisions (checked on the fixtures) and p_ai close
  semgir::Engine bf(export_dir(), semgir::Options().runtime(SEMGIR_RUNTIME_OPENVINO).precision("bf16").intra_threads(1));
  EXPECT_EQ(bf.model_version(), expected()["version"].get<std::string>() + "+bf16");
  double worst = 0;
  size_t agree = 0, n = 0;
  for (auto& [name, x] : expected()["images"].items()) {
    if (!x["ok"].get<bool>() || native_unsupported(name)) continue;
    auto r = bf.score_file(image(name));
    ASSERT_TRUE(r.ok()) << name << ": " << r.error;
    worst = std::max(worst, std::fabs(r.p_ai - x["p_ai"].get<double>()));
    agree += std::string(r.label_name()) == x["label"].get<std::string>();
    ++n;
  }
  EXPECT_LT(worst, 0.05);
  EXPECT_GE(double(agree), 0.9 * double(n));
  std::printf("openvino bf16: max |p_ai - fp32 ORT| %.2e, %zu/%zu labels agree\n", worst, agree, n);
  semgir_options o;
  semgir_options_init(&o);
  o.precision = "bf16";  // ONNX Runtime: refused with a reason
  semgir_engine* e = nullptr;
  EXPECT_EQ(semgir_open(export_dir().c_str(), &o, &e), SEMGIR_E_UNSUPPORTED);
}

TEST(Precision, Fp16GraphMatchesThePythonFp16Backend) {
  semgir::Engine eng(export_dir(), semgir::Options().precision("fp16").intra_threads(1));
  EXPECT_EQ(eng.model_version(), expected()["version_fp16"].get<std::string>());
  expect_scores_match(eng, "p_ai_fp16", "label_fp16");
}

TEST(CppWrapper, RaiiAndErrors) {
  EXPECT_THROW(semgir::Engine("/nonexistent"), semgir::Error);
  try {
    semgir::Engine bad("/nonexistent");
  } catch (const semgir::Error& e) {
    EXPECT_EQ(e.code(), SEMGIR_E_EXPORT);
  }
  semgir::Engine eng(export_dir(), semgir::Options().intra_threads(1).precision("fp32"));
  semgir::Engine moved = std::move(eng);
  auto rs = moved.score_files({image("jpeg_rgb_q90.jpg"), image("bad_empty.jpg")});
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_TRUE(rs[0].ok());
  EXPECT_NE(rs[0].label_name(), nullptr);
  EXPECT_FALSE(rs[1].ok());
  EXPECT_EQ(rs[1].label_name(), nullptr);
  EXPECT_FALSE(moved.model_version().empty());
}

}  // namespace
