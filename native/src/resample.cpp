#include "resample.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace semgir {
namespace {

// fixed-point weights: 8 bits of result, 2 bits of headroom for the negative lobes (Pillow's choice)
constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

double bicubic(double x) {  // Keys' cubic convolution, a = -0.5
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct Coeffs {
  int ksize = 0;
  std::vector<int> first, count;  // per output index of the window: first source index, how many
  std::vector<int32_t> k;         // window size * ksize fixed-point weights
};

// The weights of output indices [out0, out0 + n) of a resize inSize -> outSize (one axis).
Coeffs coefficients(int in_size, int out_size, ResampleFilter f, int out0, int n) {
  double (*filter)(double) = f == ResampleFilter::Bicubic ? bicubic : bilinear;
  const double filter_support = f == ResampleFilter::Bicubic ? 2.0 : 1.0;
  // Pillow's box is (0, 0, in_w, in_h) as C floats: in1 - in0 is a float, exact below 2^24
  const float in0 = 0.0f, in1 = float(in_size);
  double scale = double(in1 - in0) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = filter_support * filterscale;
  Coeffs c;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.first.resize(n);
  c.count.resize(n);
  c.k.assign(size_t(n) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  const double inv_filterscale = 1.0 / filterscale;
  for (int i = 0; i < n; ++i) {
    const int xx = out0 + i;
    const double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    int xmin = int(center - support + 0.5);  // truncation toward zero, as in C
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    int x = 0;
    for (; x < xmax; ++x) {
      const double v = filter((x + xmin - center + 0.5) * inv_filterscale);
      w[x] = v;
      ww += v;
    }
    if (ww != 0.0)
      for (x = 0; x < xmax; ++x) w[x] /= ww;
    int32_t* k = &c.k[size_t(i) * c.ksize];
    for (x = 0; x < xmax; ++x)
      k[x] = w[x] < 0 ? int32_t(-0.5 + w[x] * (1 << kPrecisionBits)) : int32_t(0.5 + w[x] * (1 << kPrecisionBits));
    c.first[i] = xmin;
    c.count[i] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t v) {
  const int32_t s = v >> kPrecisionBits;  // arithmetic shift: floor, like Pillow's lookup table index
  return uint8_t(s < 0 ? 0 : s > 255 ? 255 : s);
}

}  // namespace

std::vector<uint8_t> resize_rgb_window(const uint8_t* rgb, int in_w, int in_h, int out_w, int out_h,
                                       ResampleFilter filter, int x0, int y0, int w, int h) {
  if (in_w <= 0 || in_h <= 0 || out_w <= 0 || out_h <= 0 || x0 < 0 || y0 < 0 || w <= 0 || h <= 0 ||
      x0 + w > out_w || y0 + h > out_h)
    throw std::invalid_argument("resize_rgb_window: bad sizes");
  if (in_w >= (1 << 24) || in_h >= (1 << 24) || out_w >= (1 << 24) || out_h >= (1 << 24))
    throw std::length_error("image too large to resize");
  const bool need_h = out_w != in_w, need_v = out_h != in_h;

  // rows of the source the vertical pass reads, and its weights relative to the first of them
  Coeffs cv;
  int row0, nrows;
  if (need_v) {
    cv = coefficients(in_h, out_h, filter, y0, h);
    row0 = cv.first[0];
    nrows = cv.first[h - 1] + cv.count[h - 1] - row0;
    for (int i = 0; i < h; ++i) cv.first[i] -= row0;
  } else {
    row0 = y0;
    nrows = h;
  }

  // horizontal pass over those rows, only the window's columns
  std::vector<uint8_t> tmp(size_t(nrows) * w * 3);
  if (need_h) {
    const Coeffs ch = coefficients(in_w, out_w, filter, x0, w);
    for (int r = 0; r < nrows; ++r) {
      const uint8_t* line = rgb + size_t(row0 + r) * in_w * 3;
      uint8_t* out = &tmp[size_t(r) * w * 3];
      for (int i = 0; i < w; ++i) {
        const int32_t* k = &ch.k[size_t(i) * ch.ksize];
        const uint8_t* p = line + size_t(ch.first[i]) * 3;
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < ch.count[i]; ++x) {
          s0 += p[x * 3 + 0] * k[x];
          s1 += p[x * 3 + 1] * k[x];
          s2 += p[x * 3 + 2] * k[x];
        }
        out[i * 3 + 0] = clip8(s0);
        out[i * 3 + 1] = clip8(s1);
        out[i * 3 + 2] = clip8(s2);
      }
    }
  } else {
    for (int r = 0; r < nrows; ++r)
      std::memcpy(&tmp[size_t(r) * w * 3], rgb + (size_t(row0 + r) * in_w + x0) * 3, size_t(w) * 3);
  }
  if (!need_v) return tmp;

  // vertical pass
  std::vector<uint8_t> out(size_t(h) * w * 3);
  for (int j = 0; j < h; ++j) {
    const int32_t* k = &cv.k[size_t(j) * cv.ksize];
    const uint8_t* col = &tmp[size_t(cv.first[j]) * w * 3];
    uint8_t* o = &out[size_t(j) * w * 3];
    for (int i = 0; i < w * 3; ++i) {
      int32_t s = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < cv.count[j]; ++y) s += col[size_t(y) * w * 3 + i] * k[y];
      o[i] = clip8(s);
    }
  }
  return out;
}

}  // namespace semgir
