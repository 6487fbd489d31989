// The native SemGIR method against the Python pipeline: the portable initial noise (bit for bit),
// the tokenizers (CLIP BPE ids, WordPiece text) on thousands of strings, and the whole method through
// the C API on the tiny export (captions identical, p_ai within 1e-4, labels identical), with the
// rows the Python ONNX Runtime backend wrote (tests/native_fixtures.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "semgir.h"
#include "semgir.hpp"
#include "semgir_model.hpp"

namespace {

using json = nlohmann::json;

std::string testdata() {
  const char* env = std::getenv("SEMGIR_TESTDATA");
  return env ? env : SEMGIR_TESTDATA;
}
std::string semgir_dir() { return testdata() + "/export-semgir"; }

json load(const std::string& name) {
  std::ifstream f(testdata() + "/" + name);
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str());
}

const json& tokenizer_cases() {
  static json j = load("tokenizers.json");
  return j;
}

json manifest_pipeline() {
  std::ifstream f(semgir_dir() + "/manifest.json");
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str())["pipeline"];
}

TEST(SemgirNoise, BitIdenticalToPython) {
  const json& n = tokenizer_cases()["noise"];
  for (size_t k = 0; k < n["seeds"].size(); ++k) {
    const uint64_t seed = n["seeds"][k].get<uint64_t>();
    const auto want = n["values"][k].get<std::vector<double>>();
    const auto got = semgir::initial_noise(seed, want.size());
    size_t bad = 0;
    for (size_t i = 0; i < want.size(); ++i) bad += got[i] != float(want[i]);
    EXPECT_EQ(bad, 0u) << "seed " << seed;
  }
  EXPECT_EQ(semgir::image_seed(0, ""), 0u);
  EXPECT_EQ(semgir::image_seed(-1, ""), (uint64_t(1) << 62) - 1000003u);  // Python's % is never negative
}

TEST(SemgirTokenizers, ClipBpeIdsEqualPython) {
  const json& c = tokenizer_cases()["clip"];
  const json p = manifest_pipeline();
  semgir::ClipBpeTokenizer tok(semgir_dir() + "/" + p["clip_tokenizer"]["bpe_file"].get<std::string>(),
                               c["context_length"].get<int>(), c["pad_id"].get<int64_t>());
  const auto texts = c["texts"].get<std::vector<std::string>>();
  const auto ids = tok(texts);
  const size_t L = size_t(c["context_length"].get<int>());
  size_t bad = 0;
  for (size_t r = 0; r < texts.size(); ++r) {
    const auto want = c["ids"][r].get<std::vector<int64_t>>();
    const std::vector<int64_t> got(ids.begin() + r * L, ids.begin() + (r + 1) * L);
    if (got != want && ++bad <= 5) ADD_FAILURE() << "CLIP ids differ for " << json(texts[r]).dump();
  }
  EXPECT_EQ(bad, 0u) << "of " << texts.size();
  EXPECT_GE(texts.size(), 2000u);
}

TEST(SemgirTokenizers, WordPieceTextEqualsPython) {
  const json& w = tokenizer_cases()["wordpiece"];
  const json p = manifest_pipeline();
  semgir::WordPieceDecoder dec(semgir_dir() + "/" + p["captioner"]["vocab_file"].get<std::string>(),
                               p["captioner"]["special_ids"].get<std::vector<int64_t>>());
  size_t bad = 0;
  for (size_t r = 0; r < w["ids"].size(); ++r) {
    const std::string got = dec.decode(w["ids"][r].get<std::vector<int64_t>>());
    if (got != w["texts"][r].get<std::string>() && ++bad <= 5)
      ADD_FAILURE() << json(got).dump() << " != " << w["texts"][r].dump();
  }
  EXPECT_EQ(bad, 0u);
}

// the whole method through the C API, for each recorded setting
TEST(SemgirPipeline, MatchesPythonOnnxRuntimeRows) {
  const json exp = load("expected_semgir.json");
  EXPECT_EQ(exp.size(), 3u);  // defaults, guidance + odd steps, beam search
  for (auto& [key, run] : exp.items()) {
    semgir::Options opt;
    opt.method(SEMGIR_METHOD_SEMGIR);
    const auto args = run["args"].get<std::vector<std::string>>();
    for (size_t i = 0; i + 1 < args.size(); i += 2) {
      if (args[i] == "--guidance-scale") opt.guidance_scale(std::stod(args[i + 1]));
      if (args[i] == "--steps") opt.steps(std::stoi(args[i + 1]));
      if (args[i] == "--seed") opt.seed(std::stoll(args[i + 1]));
      if (args[i] == "--num-beams") opt.num_beams(std::stoi(args[i + 1]));
      if (args[i] == "--max-new-tokens") opt.max_new_tokens(std::stoi(args[i + 1]));
    }
    semgir::Engine eng(semgir_dir(), opt);
    std::vector<std::string> paths;
    for (auto& r : run["rows"]) paths.push_back(r["path"].get<std::string>());
    std::vector<semgir_details> details;
    auto res = eng.score_files(paths, &details);
    ASSERT_EQ(res.size(), paths.size());
    EXPECT_TRUE(eng.random_weights());
    EXPECT_EQ(eng.method(), "semgir");
    double worst = 0;
    for (size_t i = 0; i < res.size(); ++i) {
      const json& want = run["rows"][i];
      ASSERT_TRUE(res[i].ok()) << res[i].error;
      EXPECT_EQ(std::string(details[i].caption), want["caption"].get<std::string>()) << key << " " << paths[i];
      worst = std::max(worst, std::fabs(res[i].p_ai - want["p_ai"].get<double>()));
      EXPECT_EQ(res[i].label_name() ? json(res[i].label_name()) : json(nullptr), want["label"]) << paths[i];
      EXPECT_EQ(std::string(res[i].sha256), want["sha256"].get<std::string>());
      EXPECT_GT(details[i].regenerate_ms, 0.0);
    }
    EXPECT_LE(worst, 1e-4) << key;
    EXPECT_EQ(eng.model_version(), run["rows"][0]["model_version"].get<std::string>());
    std::printf("[semgir %s] %zu images: max |p_ai - python| = %.3g\n", key.c_str(), res.size(), worst);
  }
}

TEST(SemgirPipeline, RefusesWhatIsNotNative) {
  semgir_options o;
  semgir_options_init(&o);
  o.method = SEMGIR_METHOD_SEMGIR;
  o.precision = "bf16";  // OpenVINO's bf16 is the patch method's only
  semgir_engine* e = nullptr;
  EXPECT_NE(semgir_open(semgir_dir().c_str(), &o, &e), SEMGIR_OK);
  EXPECT_EQ(e, nullptr);
  o.precision = nullptr;
  EXPECT_EQ(semgir_open((testdata() + "/export").c_str(), &o, &e), SEMGIR_E_EXPORT);  // a patch-only export
  EXPECT_NE(std::string(semgir_last_error()).find("captioner"), std::string::npos) << semgir_last_error();
  // an API-version-1 caller (options without the SemGIR fields) gets the defaults
  o.struct_size = offsetof(semgir_options, steps);
  o.steps = -5;
  ASSERT_EQ(semgir_open(semgir_dir().c_str(), &o, &e), SEMGIR_OK) << semgir_last_error();
  EXPECT_NE(std::string(semgir_engine_model_version(e)).find("+dpm++4-g1-32px"), std::string::npos);
  semgir_close(e);
}

}  // namespace
