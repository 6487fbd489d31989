// The native resampler against Pillow, byte for byte: the fixture's BICUBIC / BILINEAR resizes of
// noise images (tests/native_fixtures.py:resample_cases), whole outputs and windows of large ones
// (the centre crop is all the patch model computes).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "resample.hpp"

namespace {

using json = nlohmann::json;

std::string resample_dir() {
  const char* env = std::getenv("SEMGIR_TESTDATA");
  return std::string(env ? env : SEMGIR_TESTDATA) + "/resample";
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(Resample, EqualsPillowByteForByte) {
  const json spec = json::parse(slurp(resample_dir() + "/resample.json"));
  int worst = 0;
  size_t cases = 0;
  for (const auto& c : spec["cases"]) {
    SCOPED_TRACE(c.dump());
    const std::string in = slurp(resample_dir() + "/" + c["input"].get<std::string>());
    const std::string want = slurp(resample_dir() + "/" + c["output"].get<std::string>());
    const int iw = c["in_w"], ih = c["in_h"], ow = c["out_w"], oh = c["out_h"];
    const int x0 = c["x0"], y0 = c["y0"], w = c["w"], h = c["h"];
    ASSERT_EQ(in.size(), size_t(iw) * ih * 3);
    ASSERT_EQ(want.size(), size_t(w) * h * 3);
    const auto f = c["filter"] == "bicubic" ? semgir::ResampleFilter::Bicubic : semgir::ResampleFilter::Bilinear;
    const auto got = semgir::resize_rgb_window(reinterpret_cast<const uint8_t*>(in.data()), iw, ih, ow, oh, f,
                                               x0, y0, w, h);
    ASSERT_EQ(got.size(), want.size());
    int diff = 0;
    size_t ndiff = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const int d = std::abs(int(got[i]) - int(uint8_t(want[i])));
      diff = std::max(diff, d);
      ndiff += d != 0;
    }
    EXPECT_EQ(diff, 0) << ndiff << " of " << got.size() << " bytes differ";
    worst = std::max(worst, diff);
    // a sub-window of the window is the same bytes (each output pixel has its own weights)
    if (w > 8 && h > 8) {
      const int sx = w / 3, sy = h / 4, sw = w / 2, sh = h / 2;
      const auto sub = semgir::resize_rgb_window(reinterpret_cast<const uint8_t*>(in.data()), iw, ih, ow, oh, f,
                                                 x0 + sx, y0 + sy, sw, sh);
      size_t bad = 0;
      for (int y = 0; y < sh; ++y)
        for (int x = 0; x < sw * 3; ++x)
          bad += sub[size_t(y) * sw * 3 + x] != got[size_t(y + sy) * w * 3 + size_t(sx) * 3 + x];
      EXPECT_EQ(bad, 0u);
    }
    ++cases;
  }
  EXPECT_GE(cases, 15u);
  std::printf("resample: %zu cases against Pillow %s, max |uint8 diff| %d\n", cases,
              spec["pillow"].get<std::string>().c_str(), worst);
}

TEST(Resample, RefusesBadWindows) {
  std::vector<uint8_t> px(4 * 3 * 3, 7);
  EXPECT_THROW(semgir::resize_rgb_window(px.data(), 4, 3, 8, 6, semgir::ResampleFilter::Bicubic, 5, 0, 4, 6),
               std::invalid_argument);
  EXPECT_THROW(semgir::resize_rgb_window(px.data(), 4, 3, 8, 6, semgir::ResampleFilter::Bicubic, 0, 0, 0, 6),
               std::invalid_argument);
  // a flat image stays flat, whatever the scale
  auto out = semgir::resize_rgb_window(px.data(), 4, 3, 9, 2, semgir::ResampleFilter::Bicubic, 0, 0, 9, 2);
  for (uint8_t v : out) EXPECT_EQ(v, 7);
}

}  // namespace
