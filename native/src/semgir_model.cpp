#include "semgir_model.hpp"

#include <zlib.h>

#include <clocale>
#include <cwctype>
#include <locale.h>
#include <wctype.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "resample.hpp"

namespace semgir {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw ExportError(path + " is missing");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

void replace_all(std::string& s, const std::string& a, const std::string& b) {
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t k = s.find(a, pos);
    if (k == std::string::npos) break;
    out.append(s, pos, k - pos);
    out += b;
    pos = k + a.size();
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

std::string strip(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && is_space((unsigned char)s[a])) ++a;
  while (b > a && is_space((unsigned char)s[b - 1])) --b;
  return s.substr(a, b - a);
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) out += char(cp);
  else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) { out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
  else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// UTF-8 -> code points (a malformed byte stands for itself, as U+FFFD would not round-trip)
std::vector<uint32_t> utf8_decode(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = (unsigned char)s[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + size_t(len) > s.size()) { out.push_back(0xFFFD); ++i; continue; }
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = true;
    for (int k = 1; k < len; ++k) {
      const unsigned char d = (unsigned char)s[i + size_t(k)];
      ok = ok && (d >> 6) == 2;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (!ok) { out.push_back(0xFFFD); ++i; continue; }
    out.push_back(cp);
    i += size_t(len);
  }
  return out;
}

// Unicode classes for CLIP's text cleanup and pre-tokenizer: Python's str.isspace, \p{L} (glibc's C.UTF-8
// alpha class beyond ASCII), \p{N} (ASCII digits only), str.lower (towlower beyond ASCII)
locale_t utf8_locale() {
  static locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", locale_t(0));
  return loc;
}
bool u_space(uint32_t c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}
bool u_digit(uint32_t c) { return c >= '0' && c <= '9'; }
bool u_letter(uint32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  if (u_space(c)) return false;
  locale_t loc = utf8_locale();
  return loc ? iswalpha_l(wint_t(c), loc) != 0 : true;
}
uint32_t u_lower(uint32_t c) {
  if (c < 0x80) return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
  locale_t loc = utf8_locale();
  return loc ? uint32_t(towlower_l(wint_t(c), loc)) : c;
}

float f32_param(const json& a, int c) { return float(a.at(c).get<double>()); }

ImagePrep parse_prep(const json& j) {
  ImagePrep p;
  p.size = j.at("size").get<int>();
  p.resize = j.value("resize", "stretch");
  p.crop = j.value("crop", "center");
  p.interpolation = j.value("interpolation", "bicubic");
  for (int c = 0; c < 3; ++c) {
    p.mean[c] = f32_param(j.at("mean"), c);
    p.std[c] = f32_param(j.at("std"), c);
  }
  if (p.interpolation != "bicubic" && p.interpolation != "bilinear")
    throw UnsupportedError("image interpolation '" + p.interpolation + "' is not implemented natively (bicubic, bilinear)");
  if (p.resize != "stretch" && p.resize != "shortest" && p.resize != "pad")
    throw ExportError("unknown resize mode '" + p.resize + "'");
  if (p.crop != "center") throw ExportError("unknown crop mode '" + p.crop + "'");
  if (p.size <= 0) throw ExportError("preprocessing size must be positive");
  return p;
}

// engine/preprocess.py:resize_and_crop
std::vector<uint8_t> resize_and_crop(const RgbImage& im, const ImagePrep& pp) {
  const int S = pp.size;
  const ResampleFilter f = pp.interpolation == "bilinear" ? ResampleFilter::Bilinear : ResampleFilter::Bicubic;
  const int h = im.height, w = im.width;
  std::vector<uint8_t> out(size_t(S) * S * 3, 0);
  auto crop_of = [&](const uint8_t* px, int W, int H) {
    const int top = (H - S) / 2, left = (W - S) / 2;
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        const int sy = y + top, sx = x + left;
        if (sy >= 0 && sy < H && sx >= 0 && sx < W) std::memcpy(&out[(size_t(y) * S + x) * 3], &px[(size_t(sy) * W + sx) * 3], 3);
      }
  };
  if (pp.resize == "stretch") {
    if (w == S && h == S) return im.rgb;
    return resize_rgb_window(im.rgb.data(), w, h, S, S, f, 0, 0, S, S);
  }
  if (pp.resize == "shortest") {
    const double scale = double(S) / double(std::min(h, w));
    const int nw = std::max(S, int(std::nearbyint(double(w) * scale)));
    const int nh = std::max(S, int(std::nearbyint(double(h) * scale)));
    if (nw != w || nh != h) return resize_rgb_window(im.rgb.data(), w, h, nw, nh, f, (nw - S) / 2, (nh - S) / 2, S, S);
    crop_of(im.rgb.data(), w, h);
    return out;
  }
  // pad: zeros on the bottom/right when a side is short, then the centre crop
  const int H = std::max(h, S), W = std::max(w, S);
  const int top = (H - S) / 2, left = (W - S) / 2;
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      const int sy = y + top, sx = x + left;
      if (sy < h && sx < w) std::memcpy(&out[(size_t(y) * S + x) * 3], &im.rgb[(size_t(sy) * w + sx) * 3], 3);
    }
  return out;
}

Tensor f32(const std::string& name, std::vector<int64_t> shape, std::vector<float> data) {
  Tensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.data = std::move(data);
  return t;
}

Tensor i64(const std::string& name, std::vector<int64_t> shape, std::vector<int64_t> data) {
  Tensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.is_i64 = true;
  t.i64 = std::move(data);
  return t;
}

// ---- DPM-Solver++ 2M (engine/runtime/scheduler.py:DpmSolverPP), float32 / float64 as numpy does ----
struct DpmSolverPP {
  std::vector<float> alphas_cumprod, sigmas;
  std::vector<int64_t> timesteps;
  std::vector<std::vector<float>> outputs;
  bool lower_order_final = true;
  int index = 0;

  static std::vector<double> linspace(double a, double b, int n) {
    std::vector<double> y(n);
    const double step = (b - a) / double(n - 1);
    for (int i = 0; i < n; ++i) y[i] = double(i) * step + a;
    if (n > 1) y[n - 1] = b;
    return y;
  }

  DpmSolverPP(int n_train, double beta_start, double beta_end, const std::string& schedule) {
    std::vector<float> betas(n_train);
    if (schedule == "scaled_linear") {
      auto l = linspace(std::pow(beta_start, 0.5), std::pow(beta_end, 0.5), n_train);
      for (int i = 0; i < n_train; ++i) { float v = float(l[i]); betas[i] = v * v; }
    } else if (schedule == "linear") {
      auto l = linspace(beta_start, beta_end, n_train);
      for (int i = 0; i < n_train; ++i) betas[i] = float(l[i]);
    } else {
      throw UnsupportedError("beta_schedule '" + schedule + "' is not supported");
    }
    alphas_cumprod.resize(n_train);
    float acc = 1.0f;
    for (int i = 0; i < n_train; ++i) { acc *= (1.0f - betas[i]); alphas_cumprod[i] = acc; }
  }

  // trailing spacing (make_scheduler forces it for dpm++)
  void set_timesteps(int steps) {
    const int n = int(alphas_cumprod.size());
    const double start = double(n), delta = -double(n) / double(steps);
    const double d = (start + delta) - start;
    const int64_t len = int64_t(std::ceil((0.0 - start) / delta));
    timesteps.clear();
    for (int64_t i = 0; i < len; ++i) timesteps.push_back(int64_t(std::nearbyint(start + double(i) * d)) - 1);
    sigmas.clear();
    for (int64_t t : timesteps) {
      const float ac = alphas_cumprod[size_t(t)];
      sigmas.push_back(std::sqrt((1.0f - ac) / ac));
    }
    sigmas.push_back(0.0f);
    outputs.clear();
    index = 0;
  }

  static void alpha_sigma(double s, double* a, double* sg) {
    *a = 1.0 / std::pow(std::pow(s, 2.0) + 1.0, 0.5);
    *sg = s * *a;
  }
  static double lambda(double a, double s) {
    return s == 0 ? std::numeric_limits<double>::infinity() : std::log(a) - std::log(s);
  }

  std::vector<float> step(const std::vector<float>& eps, int i, const std::vector<float>& sample) {
    if (i != index) throw RuntimeError("DPM-Solver++ steps must run in order");
    double a_s0, sg_s0, a_t, sg_t;
    alpha_sigma(double(sigmas[i]), &a_s0, &sg_s0);
    const size_t n = sample.size();
    std::vector<float> x0(n);
    const float fsg = float(sg_s0), fa = float(a_s0);
    for (size_t k = 0; k < n; ++k) x0[k] = (sample[k] - fsg * eps[k]) / fa;
    outputs.push_back(x0);
    if (outputs.size() > 2) outputs.erase(outputs.begin());
    alpha_sigma(double(sigmas[i + 1]), &a_t, &sg_t);
    const double lam_t = lambda(a_t, sg_t), lam_s0 = lambda(a_s0, sg_s0);
    const double h = lam_t - lam_s0;
    const bool last = i == int(timesteps.size()) - 1;
    const bool first_order = outputs.size() < 2 || (last && (lower_order_final || sigmas[i + 1] == 0.0f));
    const double em1 = std::isinf(h) ? -1.0 : std::expm1(-h);
    std::vector<float> x(n);
    const float c1 = float(sg_t / sg_s0), c2 = float(a_t * em1);
    if (first_order) {
      for (size_t k = 0; k < n; ++k) x[k] = c1 * sample[k] - c2 * x0[k];
    } else {
      double a_s1, sg_s1;
      alpha_sigma(double(sigmas[i - 1]), &a_s1, &sg_s1);
      const double h0 = lam_s0 - lambda(a_s1, sg_s1);
      const double r0 = h0 / h;
      const std::vector<float>& m0 = outputs[1];
      const std::vector<float>& m1 = outputs[0];
      const float inv_r0 = float(1.0 / r0), c3 = float(0.5 * (a_t * em1));
      for (size_t k = 0; k < n; ++k) {
        const float d1 = inv_r0 * (m0[k] - m1[k]);
        x[k] = c1 * sample[k] - c2 * m0[k] - c3 * d1;
      }
    }
    ++index;
    return x;
  }
};

}  // namespace

// ------------------------------------------------------------------------------------------
std::vector<float> initial_noise(uint64_t seed, size_t n) {
  std::vector<float> out(n);
  const uint64_t key = splitmix64(seed);
  const double scale = 1.0 / 9007199254740992.0;
  const double two_pi = 2.0 * 3.141592653589793;  // 2.0 * numpy.pi
  for (size_t i = 0; i < n; ++i) {
    const uint64_t a = splitmix64(key ^ (uint64_t(i) * 2));
    const uint64_t b = splitmix64(key ^ (uint64_t(i) * 2 + 1));
    const double u1 = (double(a >> 11) + 1.0) * scale;
    const double u2 = double(b >> 11) * scale;
    out[i] = float(std::sqrt(-2.0 * std::log(u1)) * std::cos(two_pi * u2));
  }
  return out;
}

uint64_t image_seed(int64_t seed, const std::string& sha) {
  __int128 content = 0;
  if (!sha.empty()) content = __int128(std::stoull(sha.substr(0, 12), nullptr, 16));
  const __int128 mod = __int128(1) << 62;
  __int128 v = (content + __int128(1000003) * __int128(seed)) % mod;
  if (v < 0) v += mod;
  return uint64_t(v);
}

// ------------------------------------------------------------------------------------------
WordPieceDecoder::WordPieceDecoder(const std::string& vocab_file, const std::vector<int64_t>& special)
    : special_(special) {
  const std::string text = read_text(vocab_file);
  size_t pos = 0;
  while (true) {
    size_t k = text.find('\n', pos);
    if (k == std::string::npos) { vocab_.push_back(text.substr(pos)); break; }
    vocab_.push_back(text.substr(pos, k - pos));
    pos = k + 1;
  }
  if (!vocab_.empty() && vocab_.back().empty()) vocab_.pop_back();
}

std::string WordPieceDecoder::decode(const std::vector<int64_t>& ids) const {
  std::string text;
  bool first = true;
  for (int64_t i : ids) {
    if (std::find(special_.begin(), special_.end(), i) != special_.end()) continue;
    if (i < 0 || i >= int64_t(vocab_.size())) continue;
    if (!first) text += ' ';
    text += vocab_[size_t(i)];
    first = false;
  }
  replace_all(text, " ##", "");
  text = strip(text);
  static const char* kCleanup[][2] = {{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
                                       {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (auto& r : kCleanup) replace_all(text, r[0], r[1]);
  return strip(strip(text));
}

// ------------------------------------------------------------------------------------------
ClipBpeTokenizer::ClipBpeTokenizer(const std::string& path, int context_length, int64_t pad_id)
    : pad_(pad_id), context_length_(context_length) {
  gzFile gz = gzopen(path.c_str(), "rb");
  if (!gz) throw ExportError(path + " is missing or unreadable (the CLIP BPE merges)");
  std::string data;
  char buf[1 << 16];
  int got;
  while ((got = gzread(gz, buf, sizeof buf)) > 0) data.append(buf, size_t(got));
  gzclose(gz);
  if (got < 0) throw ExportError(path + ": corrupt gzip");
  std::vector<std::string> lines;
  size_t pos = 0;
  while (true) {
    size_t k = data.find('\n', pos);
    if (k == std::string::npos) { lines.push_back(data.substr(pos)); break; }
    lines.push_back(data.substr(pos, k - pos));
    pos = k + 1;
  }
  const size_t n_merges = 49152 - 256 - 2;
  if (lines.size() < n_merges + 1) throw ExportError(path + ": too few BPE merges");
  // bytes_to_unicode: printable bytes map to themselves, the others to 256 + n, in byte order
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<uint32_t> cs(bs.begin(), bs.end());
  int extra = 0;
  for (int b = 0; b < 256; ++b)
    if (std::find(bs.begin(), bs.begin() + 188, b) == bs.begin() + 188) {
      bs.push_back(b);
      cs.push_back(uint32_t(256 + extra++));
    }
  std::vector<std::string> vocab;
  for (size_t k = 0; k < bs.size(); ++k) {
    std::string s;
    utf8_append(s, cs[k]);
    byte_sym_[bs[k]] = s;
    vocab.push_back(s);
  }
  for (size_t k = 0; k < 256; ++k) vocab.push_back(vocab[k] + "</w>");
  for (size_t m = 1; m <= n_merges; ++m) {
    std::istringstream ls(lines[m]);
    std::string a, b;
    ls >> a >> b;
    ranks_.emplace(a + " " + b, int(m - 1));
    vocab.push_back(a + b);
  }
  vocab.push_back("<start_of_text>");
  vocab.push_back("<end_of_text>");
  for (size_t k = 0; k < vocab.size(); ++k) vocab_[vocab[k]] = int64_t(k);
  sot_ = vocab_.at("<start_of_text>");
  eot_ = vocab_.at("<end_of_text>");
}

std::vector<std::string> ClipBpeTokenizer::bpe(const std::string& word) const {
  std::vector<std::string> sym;
  for (unsigned char c : word) sym.push_back(byte_sym_[c]);
  if (sym.empty()) return sym;
  sym.back() += "</w>";
  while (sym.size() > 1) {
    int best = std::numeric_limits<int>::max();
    std::string bp;
    for (size_t k = 0; k + 1 < sym.size(); ++k) {
      auto it = ranks_.find(sym[k] + " " + sym[k + 1]);
      if (it != ranks_.end() && it->second < best) best = it->second, bp = it->first;
    }
    if (best == std::numeric_limits<int>::max()) break;
    const size_t sp = bp.find(' ');
    const std::string a = bp.substr(0, sp), b = bp.substr(sp + 1);
    std::vector<std::string> next;
    for (size_t k = 0; k < sym.size();) {
      if (k + 1 < sym.size() && sym[k] == a && sym[k + 1] == b) {
        next.push_back(a + b);
        k += 2;
      } else {
        next.push_back(sym[k++]);
      }
    }
    sym.swap(next);
  }
  return sym;
}

std::vector<int64_t> ClipBpeTokenizer::encode(const std::string& raw) const {
  // _clean: ftfy.fix_text's character fixes (curly quotes, fullwidth forms, Latin ligatures; not its
  // mojibake repair nor NFC), whitespace runs -> one space, strip, lower
  std::vector<uint32_t> fixed;
  for (uint32_t c : utf8_decode(raw)) {
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) fixed.push_back('\'');
    else if (c >= 0x201C && c <= 0x201F) fixed.push_back('"');
    else if (c >= 0xFF01 && c <= 0xFF5E) fixed.push_back(c - 0xFEE0);
    else if (c == 0x3000) fixed.push_back(' ');
    else if (c >= 0xFB00 && c <= 0xFB06) {
      static const char* kLig[] = {"ff", "fi", "fl", "ffi", "ffl", "\xC5\xBFt", "st"};
      for (uint32_t d : utf8_decode(kLig[c - 0xFB00])) fixed.push_back(d);
    } else fixed.push_back(c);
  }
  std::vector<uint32_t> text;
  bool sp = false;
  for (uint32_t c : fixed) {
    if (u_space(c)) { sp = true; continue; }
    if (sp && !text.empty()) text.push_back(' ');
    sp = false;
    text.push_back(u_lower(c));
  }
  // the pre-tokenizer's pattern, leftmost alternative first
  std::vector<std::string> words;
  static const char* kLiterals[] = {"<start_of_text>", "<end_of_text>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  const size_t n = text.size();
  auto word = [&](size_t a, size_t b) {
    std::string w;
    for (size_t k = a; k < b; ++k) utf8_append(w, text[k]);
    words.push_back(w);
  };
  size_t i = 0;
  while (i < n) {
    const uint32_t c = text[i];
    bool matched = false;
    for (const char* lit : kLiterals) {
      const size_t L = std::strlen(lit);
      bool eq = i + L <= n;
      for (size_t k = 0; eq && k < L; ++k) eq = text[i + k] == uint32_t((unsigned char)lit[k]);
      if (eq) { word(i, i + L); i += L; matched = true; break; }
    }
    if (matched) continue;
    size_t j = i;
    if (u_letter(c)) {
      while (j < n && u_letter(text[j])) ++j;
    } else if (u_digit(c)) {
      j = i + 1;
    } else if (!u_space(c)) {
      while (j < n && !u_space(text[j]) && !u_letter(text[j]) && !u_digit(text[j])) ++j;
    } else {
      ++i;
      continue;
    }
    word(i, j);
    i = j;
  }
  std::vector<int64_t> ids;
  for (const auto& w : words)
    for (const auto& s : bpe(w)) {
      auto it = vocab_.find(s);
      if (it != vocab_.end()) ids.push_back(it->second);
    }
  return ids;
}

std::vector<int64_t> ClipBpeTokenizer::operator()(const std::vector<std::string>& texts) const {
  const size_t L = size_t(context_length_);
  std::vector<int64_t> out(texts.size() * L, pad_);
  for (size_t r = 0; r < texts.size(); ++r) {
    std::vector<int64_t> ids{sot_};
    for (int64_t t : encode(texts[r])) ids.push_back(t);
    ids.push_back(eot_);
    if (ids.size() > L) {
      ids.resize(L);
      ids.back() = eot_;
    }
    std::copy(ids.begin(), ids.end(), out.begin() + r * L);
  }
  return out;
}

// ------------------------------------------------------------------------------------------
SemgirModel::SemgirModel(const std::string& dir, const LoadOptions& opt, const SemgirSettings& st) : settings_(st) {
  const std::string mpath = dir + "/manifest.json";
  json m;
  try {
    m = json::parse(read_text(mpath));
  } catch (const json::exception& e) {
    throw ExportError(mpath + " is not valid JSON: " + e.what());
  } catch (const ExportError&) {
    throw ExportError(dir + " has no manifest.json: export it with `semgir-engine export --models ... --components all "
                      "--out " + dir + "`");
  }
  try {
    const json& p = m.at("pipeline");
    for (const char* need : {"captioner", "regenerator", "clip_tokenizer", "embedder", "head"})
      if (!p.contains(need))
        throw ExportError(dir + ": the manifest lacks the " + std::string(need) + " settings (an export needs the "
                          "components of every stage: `semgir-engine export --components all`)");
    if (opt.precision == "bf16") throw UnsupportedError("SemGIR runs fp32 or fp16 graphs natively, not bf16");
    // ---- captioner
    const json& c = p.at("captioner");
    blip_pre_ = parse_prep(c.at("preprocess"));
    bos_ = c.at("bos_token_id").get<int64_t>();
    eos_ = c.at("eos_token_id").get<int64_t>();
    pad_ = c.at("pad_token_id").get<int64_t>();
    wordpiece_ = WordPieceDecoder(dir + "/" + c.at("vocab_file").get<std::string>(),
                                  c.at("special_ids").get<std::vector<int64_t>>());
    json g = json::object();
    if (c.contains("generation"))
      for (auto& [k, v] : c["generation"].items())
        if (!v.is_null()) g[k] = v;
    static const std::set<std::string> kOffKeys = {"do_sample", "num_beam_groups", "diversity_penalty", "bad_words_ids",
                                                   "force_words_ids", "forced_bos_token_id", "forced_eos_token_id",
                                                   "encoder_no_repeat_ngram_size", "suppress_tokens",
                                                   "begin_suppress_tokens", "exponential_decay_length_penalty",
                                                   "sequence_bias", "constraints"};
    for (auto& [k, v] : g.items()) {
      if (!kOffKeys.count(k)) continue;
      const bool off = (v.is_boolean() && !v.get<bool>()) || (v.is_number() && v.get<double>() == 0.0) ||
                       (k == "num_beam_groups" && v.is_number() && v.get<double>() == 1.0) ||
                       (v.is_array() && v.empty()) || (v.is_object() && v.empty());
      if (!off)
        throw UnsupportedError("the captioner's generation config sets " + k + ", which this engine does not implement "
                               "(greedy and beam search only)");
    }
    max_length_ = g.contains("max_length") ? g["max_length"].get<int>() : 20;
    if (st.max_new_tokens > 0) max_length_ = 1 + st.max_new_tokens;
    min_length_ = g.contains("min_length") ? g["min_length"].get<int>() : 0;
    if (g.contains("min_new_tokens") && g["min_new_tokens"].get<int>() > 0)
      min_length_ = std::max(min_length_, 1 + g["min_new_tokens"].get<int>());
    const int beams = st.num_beams > 0 ? st.num_beams : (g.contains("num_beams") ? g["num_beams"].get<int>() : 1);
    num_beams_ = beams;
    length_penalty_ = g.contains("length_penalty") ? g["length_penalty"].get<double>() : 1.0;
    if (g.contains("early_stopping")) {
      const json& es = g["early_stopping"];
      if (es.is_string() && es.get<std::string>() == "never") early_stopping_ = 2;
      else if (es.is_boolean()) early_stopping_ = es.get<bool>() ? 1 : 0;
      else throw UnsupportedError("generation early_stopping " + es.dump() + " (true, false or \"never\")");
    }
    if (beams < 1 || max_length_ <= 1) throw UnsupportedError("invalid generation settings");
    no_repeat_ngram_ = g.contains("no_repeat_ngram_size") ? g["no_repeat_ngram_size"].get<int>() : 0;
    repetition_penalty_ = float(g.contains("repetition_penalty") ? g["repetition_penalty"].get<double>() : 1.0);
    // ---- regenerator
    const json& r = p.at("regenerator");
    if (r.value("has_lcm", false))
      throw UnsupportedError("LCM weights choose the LCM scheduler, which runs in the Python runtime only (native: "
                             "DPM-Solver++)");
    const json& sc = r.at("scheduler_config");
    if (sc.value("prediction_type", "epsilon") != "epsilon")
      throw UnsupportedError("prediction_type must be epsilon");
    sched_num_["num_train_timesteps"] = sc.value("num_train_timesteps", 1000);
    sched_num_["beta_start"] = sc.value("beta_start", 0.00085);
    sched_num_["beta_end"] = sc.value("beta_end", 0.012);
    beta_schedule_ = sc.value("beta_schedule", "scaled_linear");
    if (sc.contains("lower_order_final") && !sc["lower_order_final"].get<bool>())
      throw UnsupportedError("lower_order_final false is not implemented natively");
    DpmSolverPP probe(static_cast<int>(sched_num_["num_train_timesteps"]), sched_num_["beta_start"], sched_num_["beta_end"],
                      beta_schedule_);
    vae_scale_ = r.at("vae_scale").get<int>();
    scaling_factor_ = float(r.at("vae_scaling_factor").get<double>());
    latent_channels_ = r.at("latent_channels").get<int>();
    resolution_ = r.at("resolution").get<int>();
    if (resolution_ % (vae_scale_ * 4))
      throw ExportError("resolution " + std::to_string(resolution_) + " must be a multiple of " +
                        std::to_string(vae_scale_ * 4));
    const json& ct = p.at("clip_tokenizer");
    sd_tok_ = ClipBpeTokenizer(dir + "/" + ct.at("bpe_file").get<std::string>(), ct.value("context_length", 77),
                               r.value("tokenizer_pad_id", int64_t(0)));
    // ---- embedder, head
    clip_pre_ = parse_prep(p.at("embedder").at("preprocess"));
    dim_ = p.at("embedder").at("dim").get<int>();
    threshold_ = p.at("head").value("threshold", 0.5);
    version_ = p.at("head").value("version", std::string("semgir-head"));
    random_weights_ = p.contains("source") && p["source"].value("kind", "real") != "real";
    char buf[64];
    std::snprintf(buf, sizeof buf, "+dpm++%d-g%g-%dpx", st.steps, st.guidance_scale, resolution_);
    version_ += buf;
    if (st.steps < 1) throw UnsupportedError("steps must be >= 1");
    // ---- graphs
    SessionOptions so = opt.session;
    for (const char* name : {"blip_vision", "blip_text_decoder_init", "blip_text_decoder_with_past", "sd_text_encoder",
                             "unet", "vae_decoder", "clip_image", "semgir_head"}) {
      const json* entries = m.contains("components") && m["components"].contains(name) ? &m["components"][name] : nullptr;
      if (!entries || entries->empty())
        throw ExportError(dir + " holds no '" + std::string(name) + "' graph; export every pipeline component "
                          "(`semgir-engine export --components all`)");
      const json& e = entries->contains(opt.precision) ? (*entries)[opt.precision] : entries->begin().value();
      const std::string graph = dir + "/" + e.at("file").get<std::string>();
      if (opt.verify_hashes) {
        json files = e.contains("files") ? e["files"] : json::array({{{"file", e["file"]}, {"sha256", e["sha256"]}}});
        for (auto& f : files) {
          const std::string s = read_text(dir + "/" + f.at("file").get<std::string>());
          if (sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), s.size()) != f.at("sha256").get<std::string>())
            throw ExportError(f.at("file").get<std::string>() + ": sha256 differs from the manifest (corrupt or "
                              "replaced); re-export");
        }
      }
      if (opt.runtime == "onnxruntime") sessions_[name] = make_onnxruntime_session(graph, so);
      else if (opt.runtime == "openvino") sessions_[name] = make_openvino_session(graph, so);
      else throw UnsupportedError("unknown runtime '" + opt.runtime + "'");
    }
    runtime_desc_ = sessions_["unet"]->describe();
  } catch (const json::exception& e) {
    throw ExportError(mpath + ": malformed SemGIR settings: " + e.what());
  }
}

std::vector<Tensor> SemgirModel::call(const std::string& name, const std::vector<Tensor>& in,
                                      const std::vector<std::string>& outs) {
  return sessions_.at(name)->run(in, outs);
}

std::vector<float> SemgirModel::preprocess(const std::vector<const RgbImage*>& images, const ImagePrep& pp) {
  const int S = pp.size;
  const size_t plane = size_t(S) * S;
  std::vector<float> x(images.size() * 3 * plane);
  for (size_t n = 0; n < images.size(); ++n) {
    const std::vector<uint8_t> crop = resize_and_crop(*images[n], pp);
    float* out = x.data() + n * 3 * plane;
    for (size_t i = 0; i < plane; ++i)
      for (int c = 0; c < 3; ++c) {
        float v = float(crop[i * 3 + c]) / 255.0f;
        v = (v - pp.mean[c]) / pp.std[c];
        out[c * plane + i] = v;
      }
  }
  return x;
}

// engine/semgir/decoding.py:process on one row's next-token scores
void SemgirModel::process(const std::vector<int64_t>& seq, float* s, size_t V) const {
  if (repetition_penalty_ != 1.0f) {
    std::set<int64_t> seen(seq.begin(), seq.end());
    for (int64_t t : seen)
      if (t >= 0 && size_t(t) < V) s[t] = s[t] < 0 ? s[t] * repetition_penalty_ : s[t] / repetition_penalty_;
  }
  const size_t ng = size_t(no_repeat_ngram_);
  if (ng > 0 && seq.size() + 1 >= ng) {
    for (size_t i = 0; i + ng <= seq.size(); ++i) {
      bool eq = true;
      for (size_t k = 0; k + 1 < ng; ++k) eq = eq && seq[i + k] == seq[seq.size() - ng + 1 + k];
      if (eq && seq[i + ng - 1] >= 0 && size_t(seq[i + ng - 1]) < V) s[seq[i + ng - 1]] = -INFINITY;
    }
  }
  if (int(seq.size()) < min_length_ && eos_ >= 0 && size_t(eos_) < V) s[eos_] = -INFINITY;
}

namespace {
// the decoder graphs as "logits of the next token" (engine/semgir/decoding.py:DecoderSteps, kv form)
struct KvSteps {
  std::function<std::vector<Tensor>(const std::string&, const std::vector<Tensor>&, const std::vector<std::string>&)> call;
  Tensor enc, past, cross;
  bool have_past = false;
  // rows x prefix ids -> rows x V logits of the last position
  std::vector<float> operator()(const std::vector<std::vector<int64_t>>& ids, size_t* V) {
    const size_t n = ids.size(), cur = ids[0].size();
    std::vector<Tensor> out;
    if (!have_past) {
      std::vector<int64_t> flat;
      for (auto& r : ids) flat.insert(flat.end(), r.begin(), r.end());
      out = call("blip_text_decoder_init", {i64("input_ids", {int64_t(n), int64_t(cur)}, flat), enc},
                 {"logits", "present", "cross_present"});
      cross = std::move(out[2]);
      cross.name = "cross_past";
    } else {
      std::vector<int64_t> last;
      for (auto& r : ids) last.push_back(r.back());
      out = call("blip_text_decoder_with_past", {i64("input_ids", {int64_t(n), 1}, last), past, cross},
                 {"logits", "present"});
    }
    past = std::move(out[1]);
    past.name = "past";
    have_past = true;
    const Tensor& lg = out[0];
    *V = size_t(lg.shape.back());
    const size_t T = size_t(lg.shape[1]);
    std::vector<float> res(n * *V);
    for (size_t r = 0; r < n; ++r)
      std::copy(lg.data.begin() + (r * T + T - 1) * *V, lg.data.begin() + (r * T + T) * *V, res.begin() + r * *V);
    return res;
  }
  // caches (layers, key/value, batch, heads, tokens, head_dim): keep batch rows `rows`
  static void take_rows(Tensor& t, const std::vector<int64_t>& rows) {
    const size_t outer = size_t(t.shape[0] * t.shape[1]), B = size_t(t.shape[2]);
    size_t inner = 1;
    for (size_t d = 3; d < t.shape.size(); ++d) inner *= size_t(t.shape[d]);
    std::vector<float> out(outer * rows.size() * inner);
    for (size_t o = 0; o < outer; ++o)
      for (size_t r = 0; r < rows.size(); ++r)
        std::copy(t.data.begin() + (o * B + size_t(rows[r])) * inner, t.data.begin() + (o * B + size_t(rows[r]) + 1) * inner,
                  out.begin() + (o * rows.size() + r) * inner);
    t.data.swap(out);
    t.shape[2] = int64_t(rows.size());
  }
  void reorder(const std::vector<int64_t>& rows) {
    if (!have_past) return;
    take_rows(past, rows);
    take_rows(cross, rows);
  }
};

// numpy's pairwise float32 sum (the inner loop of np.sum along a contiguous axis)
float pairwise_sum(const float* a, size_t n) {
  if (n < 8) {
    float r = 0.0f;
    for (size_t i = 0; i < n; ++i) r += a[i];
    return r;
  }
  if (n <= 128) {
    float r[8];
    for (int k = 0; k < 8; ++k) r[k] = a[k];
    size_t i;
    for (i = 8; i < n - (n % 8); i += 8)
      for (int k = 0; k < 8; ++k) r[k] += a[i + k];
    float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

// indices of the k largest, largest first, ties: lower index first (np.argsort(-x, kind="stable")[:k])
std::vector<size_t> top_k(const float* x, size_t n, size_t k) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return -x[a] < -x[b]; });
  idx.resize(k);
  return idx;
}
}  // namespace

// engine/semgir/decoding.py:beam_search (transformers' vectorised beam search, one EOS, one sequence)
std::vector<int64_t> SemgirModel::beam_search(const std::vector<float>& enc, const std::vector<int64_t>& enc_shape,
                                              size_t B, size_t* length) {
  const size_t K = size_t(num_beams_), L = size_t(max_length_), keep = 2 * K, prompt = 1;
  const float NEG = -1.0e9f;
  const int64_t fill = pad_ ? pad_ : eos_;
  KvSteps steps;
  steps.call = [this](const std::string& n, const std::vector<Tensor>& in, const std::vector<std::string>& o) {
    return call(n, in, o);
  };
  // encoder states repeated K times per image
  const size_t per = enc.size() / B;
  std::vector<float> rep;
  for (size_t b = 0; b < B; ++b)
    for (size_t k = 0; k < K; ++k) rep.insert(rep.end(), enc.begin() + b * per, enc.begin() + (b + 1) * per);
  std::vector<int64_t> rshape = enc_shape;
  rshape[0] = int64_t(B * K);
  steps.enc = f32("encoder_hidden_states", rshape, std::move(rep));
  // state, row-major (B, K, ...)
  std::vector<int64_t> running(B * K * L, fill);
  for (size_t r = 0; r < B * K; ++r) running[r * L] = bos_;
  std::vector<int64_t> sequences = running;
  std::vector<float> running_scores(B * K, 0.0f), beam_scores(B * K, NEG);
  for (size_t b = 0; b < B; ++b)
    for (size_t k = 1; k < K; ++k) running_scores[b * K + k] = NEG;
  std::vector<char> finished(B * K, 0), unsatisfied(B, 1);
  const size_t LI = L - 1;
  std::vector<int64_t> running_idx(B * K * LI, -1), beam_idx = running_idx;
  const double lp = length_penalty_;
  size_t cur = 1;
  while (true) {
    std::vector<std::vector<int64_t>> flat(B * K);
    for (size_t r = 0; r < B * K; ++r) flat[r].assign(running.begin() + r * L, running.begin() + r * L + cur);
    size_t V = 0;
    std::vector<float> logits = steps(flat, &V);
    std::vector<float> acc(B * K * V);
    for (size_t r = 0; r < B * K; ++r) {
      float* x = &logits[r * V];
      float m = x[0];
      for (size_t v = 1; v < V; ++v) m = std::max(m, x[v]);
      std::vector<float> z(V), ez(V);
      for (size_t v = 0; v < V; ++v) { z[v] = x[v] - m; ez[v] = std::exp(z[v]); }
      const float lse = std::log(pairwise_sum(ez.data(), V));
      for (size_t v = 0; v < V; ++v) x[v] = z[v] - lse;
      process(flat[r], x, V);
      for (size_t v = 0; v < V; ++v) acc[r * V + v] = x[v] + running_scores[r];
    }
    std::vector<int64_t> top_seq(B * keep * L), top_idx(B * keep * LI), top_ids(B * keep);
    std::vector<float> top_lp(B * keep), run_lp(B * keep);
    std::vector<char> hits(B * keep);
    bool all_hits = true;
    for (size_t b = 0; b < B; ++b) {
      auto top = top_k(&acc[b * K * V], K * V, keep);
      for (size_t j = 0; j < keep; ++j) {
        const size_t src = top[j] / V, q = b * keep + j;
        top_lp[q] = acc[b * K * V + top[j]];
        std::copy(running.begin() + (b * K + src) * L, running.begin() + (b * K + src + 1) * L, top_seq.begin() + q * L);
        std::copy(running_idx.begin() + (b * K + src) * LI, running_idx.begin() + (b * K + src + 1) * LI,
                  top_idx.begin() + q * LI);
        top_ids[q] = int64_t(top[j] % V);
        top_seq[q * L + cur] = top_ids[q];
        top_idx[q * LI + cur - prompt] = int64_t(src + b * K);
        hits[q] = top_ids[q] == eos_ || cur + 1 >= L;
        all_hits = all_hits && hits[q];
        run_lp[q] = top_lp[q] + float(hits[q]) * NEG;
      }
    }
    const float denom = float(std::pow(double(cur + 1 - prompt), lp));
    std::vector<int64_t> nrunning(B * K * L), nrunning_idx(B * K * LI), nsequences(B * K * L), nbeam_idx(B * K * LI);
    std::vector<float> nrunning_scores(B * K), nbeam_scores(B * K);
    std::vector<char> nfinished(B * K);
    for (size_t b = 0; b < B; ++b) {
      auto nxt = top_k(&run_lp[b * keep], keep, K);
      for (size_t k = 0; k < K; ++k) {
        const size_t q = b * keep + nxt[k], r = b * K + k;
        std::copy(top_seq.begin() + q * L, top_seq.begin() + (q + 1) * L, nrunning.begin() + r * L);
        std::copy(top_idx.begin() + q * LI, top_idx.begin() + (q + 1) * LI, nrunning_idx.begin() + r * LI);
        nrunning_scores[r] = run_lp[q];
      }
      bool all_fin = true;
      for (size_t k = 0; k < K; ++k) all_fin = all_fin && finished[b * K + k];
      const bool full = all_fin && early_stopping_ == 1;
      std::vector<float> m_scores(K + keep);
      for (size_t k = 0; k < K; ++k) m_scores[k] = beam_scores[b * K + k];
      for (size_t j = 0; j < keep; ++j) {
        const size_t q = b * keep + j;
        const bool just = hits[q] && j < K;
        float f = top_lp[q] / denom;
        f = f + float(full) * NEG;
        f = f + float(!unsatisfied[b]) * NEG;
        f = f + float(!just) * NEG;
        m_scores[K + j] = f;
      }
      auto best = top_k(m_scores.data(), K + keep, K);
      for (size_t k = 0; k < K; ++k) {
        const size_t s = best[k], r = b * K + k;
        nbeam_scores[r] = m_scores[s];
        if (s < K) {
          const size_t o = b * K + s;
          std::copy(sequences.begin() + o * L, sequences.begin() + (o + 1) * L, nsequences.begin() + r * L);
          std::copy(beam_idx.begin() + o * LI, beam_idx.begin() + (o + 1) * LI, nbeam_idx.begin() + r * LI);
          nfinished[r] = finished[o];
        } else {
          const size_t q = b * keep + (s - K);
          std::copy(top_seq.begin() + q * L, top_seq.begin() + (q + 1) * L, nsequences.begin() + r * L);
          std::copy(top_idx.begin() + q * LI, top_idx.begin() + (q + 1) * LI, nbeam_idx.begin() + r * LI);
          nfinished[r] = hits[q] && (s - K) < K;
        }
      }
    }
    running.swap(nrunning);
    running_idx.swap(nrunning_idx);
    running_scores.swap(nrunning_scores);
    sequences.swap(nsequences);
    beam_idx.swap(nbeam_idx);
    beam_scores.swap(nbeam_scores);
    finished.swap(nfinished);
    std::vector<int64_t> rows(B * K);
    for (size_t r = 0; r < B * K; ++r) rows[r] = running_idx[r * LI + cur - prompt];
    steps.reorder(rows);
    ++cur;
    const double best_len = (early_stopping_ == 2 && lp > 0) ? double(L - prompt) : double(cur - prompt);
    const float bl = float(std::pow(best_len, lp));
    bool any_unsat = false, all_finished = true;
    for (size_t b = 0; b < B; ++b) {
      const float best_possible = running_scores[b * K] / bl;
      float mn = beam_scores[b * K];
      for (size_t k = 1; k < K; ++k) mn = std::min(mn, beam_scores[b * K + k]);
      bool any = false;
      for (size_t k = 0; k < K; ++k) {
        const float worst = finished[b * K + k] ? mn : NEG;
        any = any || best_possible > worst;
        all_finished = all_finished && finished[b * K + k];
      }
      unsatisfied[b] = unsatisfied[b] && any;
      any_unsat = any_unsat || unsatisfied[b];
    }
    const bool go_on = any_unsat && !(all_finished && early_stopping_ == 1) && !all_hits;
    if (!go_on) break;
  }
  size_t out_len = 0;
  for (size_t b = 0; b < B; ++b) {
    size_t c = 0;
    for (size_t j = 0; j < LI; ++j) c += beam_idx[(b * K) * LI + j] >= 0;
    out_len = std::max(out_len, c);
  }
  out_len += prompt;
  *length = out_len;
  std::vector<int64_t> out(B * out_len);
  for (size_t b = 0; b < B; ++b)
    std::copy(sequences.begin() + (b * K) * L, sequences.begin() + (b * K) * L + out_len, out.begin() + b * out_len);
  return out;
}

// engine/semgir/decoding.py:greedy with DecoderSteps over the key/value-cache graphs
std::vector<int64_t> SemgirModel::greedy(const std::vector<float>& enc, const std::vector<int64_t>& enc_shape,
                                         size_t n, size_t* length) {
  std::vector<std::vector<int64_t>> ids(n, std::vector<int64_t>{bos_});
  std::vector<bool> unfinished(n, true);
  KvSteps steps;
  steps.call = [this](const std::string& nm, const std::vector<Tensor>& in, const std::vector<std::string>& o) {
    return call(nm, in, o);
  };
  steps.enc = f32("encoder_hidden_states", enc_shape, enc);
  size_t cur = 1;
  while (int(cur) < max_length_) {
    size_t V = 0;
    const std::vector<float> logits = steps(ids, &V);
    bool any = false;
    for (size_t r = 0; r < n; ++r) {
      std::vector<float> s(logits.begin() + r * V, logits.begin() + (r + 1) * V);
      process(ids[r], s.data(), V);
      int64_t best = 0;
      for (size_t v = 1; v < V; ++v)
        if (s[v] > s[best]) best = int64_t(v);
      const int64_t nxt = unfinished[r] ? best : pad_;
      ids[r].push_back(nxt);
      if (nxt == eos_) unfinished[r] = false;
      any = any || unfinished[r];
    }
    ++cur;
    if (!any) break;
  }
  *length = cur;
  std::vector<int64_t> flat;
  for (auto& r : ids) flat.insert(flat.end(), r.begin(), r.end());
  return flat;
}

std::vector<std::string> SemgirModel::caption(const std::vector<const RgbImage*>& images) {
  const size_t n = images.size();
  const int S = blip_pre_.size;
  auto emb = call("blip_vision", {f32("pixel_values", {int64_t(n), 3, S, S}, preprocess(images, blip_pre_))},
                  {"image_embeds"});
  size_t L = 0;
  auto ids = num_beams_ > 1 ? beam_search(emb[0].data, emb[0].shape, n, &L) : greedy(emb[0].data, emb[0].shape, n, &L);
  std::vector<std::string> caps;
  for (size_t r = 0; r < n; ++r)
    caps.push_back(strip(wordpiece_.decode(std::vector<int64_t>(ids.begin() + r * L, ids.begin() + (r + 1) * L))));
  return caps;
}

std::vector<std::vector<uint8_t>> SemgirModel::regenerate(const std::vector<std::string>& captions,
                                                          const std::vector<uint64_t>& seeds) {
  const size_t n = captions.size();
  const float g = float(settings_.guidance_scale);
  const bool cfg = settings_.guidance_scale > 1.0;
  const int64_t Lc = sd_tok_.context_length();
  auto encode = [&](const std::vector<std::string>& texts) {
    auto o = call("sd_text_encoder", {i64("input_ids", {int64_t(texts.size()), Lc}, sd_tok_(texts))},
                  {"last_hidden_state"});
    return std::move(o[0]);
  };
  Tensor cond = encode(captions);
  if (cfg) {
    Tensor un = encode(std::vector<std::string>(n, ""));
    un.data.insert(un.data.end(), cond.data.begin(), cond.data.end());
    un.shape[0] = int64_t(2 * n);
    cond = std::move(un);
  }
  cond.name = "encoder_hidden_states";
  const int lat = resolution_ / vae_scale_;
  const size_t per = size_t(latent_channels_) * lat * lat;
  std::vector<float> latents;
  for (uint64_t s : seeds) {
    auto z = initial_noise(s, per);
    latents.insert(latents.end(), z.begin(), z.end());
  }
  DpmSolverPP sched(static_cast<int>(sched_num_["num_train_timesteps"]), sched_num_["beta_start"], sched_num_["beta_end"],
                    beta_schedule_);
  sched.set_timesteps(settings_.steps);
  // init_noise_sigma is 1.0: latents * float32(1.0) leaves them as they are
  for (size_t i = 0; i < sched.timesteps.size(); ++i) {
    std::vector<float> x = latents;
    if (cfg) x.insert(x.end(), latents.begin(), latents.end());
    const int64_t b = int64_t(cfg ? 2 * n : n);
    auto o = call("unet",
                  {f32("sample", {b, latent_channels_, lat, lat}, std::move(x)),
                   f32("timestep", {b}, std::vector<float>(size_t(b), float(sched.timesteps[i]))), cond},
                  {"noise_pred"});
    std::vector<float> eps = std::move(o[0].data);
    if (cfg) {
      std::vector<float> e(n * per);
      for (size_t k = 0; k < n * per; ++k) {
        const float u = eps[k], t = eps[n * per + k];
        e[k] = u + g * (t - u);
      }
      eps.swap(e);
    }
    latents = sched.step(eps, int(i), latents);
  }
  for (auto& v : latents) v = v / scaling_factor_;
  auto img = call("vae_decoder", {f32("latent", {int64_t(n), latent_channels_, lat, lat}, std::move(latents))},
                  {"image"});
  const Tensor& im = img[0];
  const size_t H = size_t(im.shape[2]), W = size_t(im.shape[3]), plane = H * W;
  std::vector<std::vector<uint8_t>> out(n, std::vector<uint8_t>(plane * 3));
  for (size_t r = 0; r < n; ++r)
    for (int c = 0; c < 3; ++c)
      for (size_t k = 0; k < plane; ++k) {
        float v = im.data[(r * 3 + size_t(c)) * plane + k] / 2.0f + 0.5f;
        v = std::min(std::max(v, 0.0f), 1.0f);
        float w = std::nearbyint(v * 255.0f);
        w = std::min(std::max(w, 0.0f), 255.0f);
        out[r][k * 3 + size_t(c)] = uint8_t(w);
      }
  return out;
}

std::vector<float> SemgirModel::embed(const std::vector<const RgbImage*>& images) {
  const int S = clip_pre_.size;
  auto o = call("clip_image",
                {f32("pixel_values", {int64_t(images.size()), 3, S, S}, preprocess(images, clip_pre_))}, {"embedding"});
  return std::move(o[0].data);
}

std::vector<double> SemgirModel::classify(const std::vector<float>& features, size_t n) {
  auto o = call("semgir_head", {f32("features", {int64_t(n), int64_t(features.size() / n)}, features)}, {"logits"});
  std::vector<double> p(n);
  for (size_t r = 0; r < n; ++r) {
    const double z0 = o[0].data[r * 2], z1 = o[0].data[r * 2 + 1];
    const double m = std::max(z0, z1);
    const double e0 = std::exp(z0 - m), e1 = std::exp(z1 - m);
    p[r] = e1 / (e0 + e1);
  }
  return p;
}

SemgirOutput SemgirModel::run(const std::vector<const RgbImage*>& images, const std::vector<std::string>& shas) {
  SemgirOutput out;
  const size_t n = images.size();
  if (!n) return out;
  auto t0 = Clock::now();
  out.captions = caption(images);
  out.timings_ms["caption"] = ms_since(t0) / double(n);
  t0 = Clock::now();
  std::vector<uint64_t> seeds;
  for (size_t i = 0; i < n; ++i) seeds.push_back(image_seed(settings_.seed, shas[i]));
  out.regenerated = regenerate(out.captions, seeds);
  out.timings_ms["regenerate"] = ms_since(t0) / double(n);
  t0 = Clock::now();
  std::vector<RgbImage> regen(n);
  std::vector<const RgbImage*> all(images);
  for (size_t i = 0; i < n; ++i) {
    regen[i].width = regen[i].height = int(std::sqrt(double(out.regenerated[i].size() / 3)));
    regen[i].rgb = out.regenerated[i];
  }
  for (auto& r : regen) all.push_back(&r);
  std::vector<float> emb = embed(all);
  out.timings_ms["embed"] = ms_since(t0) / double(n);
  t0 = Clock::now();
  const size_t d = emb.size() / (2 * n);
  std::vector<float> feats(n * 2 * d);
  for (size_t i = 0; i < n; ++i) {
    std::copy(emb.begin() + i * d, emb.begin() + (i + 1) * d, feats.begin() + i * 2 * d);
    std::copy(emb.begin() + (n + i) * d, emb.begin() + (n + i + 1) * d, feats.begin() + i * 2 * d + d);
  }
  out.p_ai = classify(feats, n);
  out.timings_ms["head"] = ms_since(t0) / double(n);
  return out;
}

}  // namespace semgir
