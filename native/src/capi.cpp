// The C API (include/semgir.h): handles, per-item errors, batches. No exception crosses it.
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "decode.hpp"
#include "patch.hpp"
#include "semgir_model.hpp"
#include "semgir.h"

#ifndef SEMGIR_VERSION_STRING
#define SEMGIR_VERSION_STRING "0.0.0"
#endif

struct semgir_engine {
  std::unique_ptr<semgir::PatchModel> patch;
  std::unique_ptr<semgir::SemgirModel> semgir;  // method "semgir"
  std::string version;
  double threshold = 0.5;
  bool random_weights = false;
  std::mutex model_mutex;  // model calls are serialised per handle; decoding runs in parallel
  std::string method = "patch";
  std::string runtime;
  int64_t max_pixels = semgir::kDefaultMaxPixels;
  int64_t max_bytes = semgir::kDefaultMaxBytes;
};

namespace {

thread_local std::string g_last_error;

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

semgir_status fail(semgir_status s, const std::string& msg) {
  g_last_error = msg;
  return s;
}

void copy_str(char* dst, size_t cap, const std::string& s) {
  size_t n = std::min(cap - 1, s.size());
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

void reset(semgir_result* r) {
  std::memset(r, 0, sizeof *r);
  r->status = SEMGIR_OK;
  r->p_ai = std::numeric_limits<double>::quiet_NaN();
  r->label = SEMGIR_LABEL_NONE;
}

void set_error(semgir_result* r, semgir_status s, const std::string& msg) {
  r->status = s;
  r->p_ai = std::numeric_limits<double>::quiet_NaN();
  r->label = SEMGIR_LABEL_NONE;
  r->width = r->height = 0;
  copy_str(r->error, sizeof r->error, msg);
}

// One input of a batch, whatever its kind.
struct Item {
  const char* path = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0;
  const semgir_rgb_image* rgb = nullptr;
};

void decode_item(const semgir_engine* e, const Item& it, semgir_result* r, semgir::RgbImage* img) {
  auto t0 = Clock::now();
  try {
    if (it.rgb) {
      const auto& p = *it.rgb;
      if (!p.data || p.width <= 0 || p.height <= 0) throw semgir::InputError("RGB image has no pixels or no data");
      int64_t stride = p.stride ? p.stride : int64_t(p.width) * 3;
      if (stride < int64_t(p.width) * 3) throw semgir::InputError("RGB stride smaller than width * 3");
      if (int64_t(p.width) * p.height > e->max_pixels)
        throw semgir::InputError("image too large: " + std::to_string(p.width) + "x" + std::to_string(p.height) +
                                 " pixels");
      img->width = p.width;
      img->height = p.height;
      img->rgb.resize(size_t(p.width) * p.height * 3);
      for (int y = 0; y < p.height; ++y)
        std::memcpy(&img->rgb[size_t(y) * p.width * 3], p.data + size_t(y) * stride, size_t(p.width) * 3);
      copy_str(r->sha256, sizeof r->sha256, semgir::sha256_hex(img->rgb.data(), img->rgb.size()));
    } else {
      std::vector<uint8_t> file;
      const uint8_t* d = it.data;
      size_t n = it.size;
      if (it.path) {
        file = semgir::read_file(it.path, e->max_bytes);
        d = file.data();
        n = file.size();
      } else {
        if (!d && n) throw semgir::InputError("buffer is NULL");
        if (int64_t(n) > e->max_bytes)
          throw semgir::InputError("input too large: " + std::to_string(n) + " bytes > limit " +
                                   std::to_string(e->max_bytes));
      }
      if (n == 0) throw semgir::InputError("empty file (0 bytes)");
      copy_str(r->sha256, sizeof r->sha256, semgir::sha256_hex(d, n));
      *img = semgir::decode_image(d, n, e->max_pixels);
      copy_str(r->note, sizeof r->note, img->note);
    }
    r->width = img->width;
    r->height = img->height;
  } catch (const semgir::InputError& ex) {
    set_error(r, SEMGIR_E_INPUT, ex.what());
  } catch (const std::bad_alloc&) {
    set_error(r, SEMGIR_E_INPUT, "out of memory decoding this image");
  } catch (const std::exception& ex) {
    set_error(r, SEMGIR_E_INTERNAL, std::string("cannot decode image: ") + ex.what());
  }
  r->decode_ms = ms_since(t0);
}

// Decode every item, score the good ones in one model call; a failed batch is retried item by item.
semgir_details* details_at(semgir_details* details, size_t i) {
  if (!details) return nullptr;
  const size_t stride = details[0].struct_size;
  return reinterpret_cast<semgir_details*>(reinterpret_cast<char*>(details) + i * stride);
}

semgir_status score_items_impl(semgir_engine* e, const Item* items, size_t count, semgir_result* results,
                               semgir_details* details) {
  if (details && details[0].struct_size < sizeof(uint32_t))
    throw std::invalid_argument("details[0].struct_size is not set (call semgir_details_init)");
  std::vector<semgir::RgbImage> imgs(count);
  std::vector<size_t> ok;
  for (size_t i = 0; i < count; ++i) {
    if (semgir_details* d = details_at(details, i)) {
      const uint32_t sz = d->struct_size;
      std::memset(d, 0, std::min<size_t>(sz, sizeof(semgir_details)));
      d->struct_size = sz;
    }
    reset(&results[i]);
    decode_item(e, items[i], &results[i], &imgs[i]);
    if (results[i].status == SEMGIR_OK) ok.push_back(i);
  }
  auto run = [&](const std::vector<size_t>& idx) {
    std::vector<const semgir::RgbImage*> batch;
    for (size_t i : idx) batch.push_back(&imgs[i]);
    auto t0 = Clock::now();
    std::vector<double> p;
    semgir::SemgirOutput so;
    {
      std::lock_guard<std::mutex> lock(e->model_mutex);
      if (e->semgir) {
        std::vector<std::string> shas;
        for (size_t i : idx) shas.push_back(results[i].sha256);
        so = e->semgir->run(batch, shas);
        p = so.p_ai;
      } else {
        p = e->patch->predict(batch);
      }
    }
    double share = ms_since(t0) / double(idx.size());
    for (size_t k = 0; k < idx.size(); ++k) {
      semgir_result* r = &results[idx[k]];
      r->p_ai = p[k];
      r->label = e->random_weights ? SEMGIR_LABEL_NONE : p[k] >= e->threshold ? SEMGIR_LABEL_AI : SEMGIR_LABEL_REAL;
      r->model_ms = share;
      semgir_details* d = details_at(details, idx[k]);
      if (d && e->semgir) {
        semgir_details tmp;
        std::memset(&tmp, 0, sizeof tmp);
        tmp.struct_size = d->struct_size;
        copy_str(tmp.caption, sizeof tmp.caption, so.captions[k]);
        tmp.caption_ms = so.timings_ms["caption"];
        tmp.regenerate_ms = so.timings_ms["regenerate"];
        tmp.embed_ms = so.timings_ms["embed"];
        tmp.head_ms = so.timings_ms["head"];
        std::memcpy(d, &tmp, std::min<size_t>(d->struct_size, sizeof tmp));
      }
    }
  };
  if (!ok.empty()) {
    try {
      run(ok);
    } catch (const std::exception& batch_error) {
      for (size_t i : ok) {  // only the bad one fails
        try {
          run({i});
        } catch (const std::bad_alloc&) {
          set_error(&results[i], SEMGIR_E_INTERNAL, "scoring failed: out of memory");
        } catch (const std::exception& ex) {
          set_error(&results[i], SEMGIR_E_RUNTIME, std::string("scoring failed: ") + ex.what());
        }
      }
    }
  }
  size_t failed = 0;
  for (size_t i = 0; i < count; ++i) failed += results[i].status != SEMGIR_OK;
  if (failed) {
    g_last_error = std::to_string(failed) + " of " + std::to_string(count) + " inputs failed";
    return count == 1 ? results[0].status : SEMGIR_E_PARTIAL;
  }
  return SEMGIR_OK;
}

// The boundary: nothing thrown gets out; a call-level failure is written into every result.
semgir_status score_items(semgir_engine* e, const Item* items, size_t count, semgir_result* results,
                          semgir_details* details = nullptr) {
  if (!e) return fail(SEMGIR_E_INVALID_ARGUMENT, "engine is NULL");
  if (!results) return fail(SEMGIR_E_INVALID_ARGUMENT, "results is NULL");
  semgir_status s = SEMGIR_E_INTERNAL;
  std::string msg;
  try {
    return score_items_impl(e, items, count, results, details);
  } catch (const std::invalid_argument& ex) {
    s = SEMGIR_E_INVALID_ARGUMENT;
    msg = ex.what();
  } catch (const std::bad_alloc&) {
    msg = "out of memory";
  } catch (const std::exception& ex) {
    msg = ex.what();
  } catch (...) {
    msg = "unknown failure";
  }
  for (size_t i = 0; i < count; ++i) set_error(&results[i], s, msg);
  return fail(s, msg);
}

}  // namespace

extern "C" {

const char* semgir_version(void) { return SEMGIR_VERSION_STRING; }
int32_t semgir_api_version(void) { return SEMGIR_API_VERSION; }
const char* semgir_runtimes(void) { return semgir::runtimes_built(); }
const char* semgir_last_error(void) { return g_last_error.c_str(); }

const char* semgir_status_name(semgir_status s) {
  switch (s) {
    case SEMGIR_OK: return "ok";
    case SEMGIR_E_INVALID_ARGUMENT: return "invalid argument";
    case SEMGIR_E_INPUT: return "bad input";
    case SEMGIR_E_EXPORT: return "export directory";
    case SEMGIR_E_RUNTIME: return "runtime";
    case SEMGIR_E_UNSUPPORTED: return "unsupported";
    case SEMGIR_E_PARTIAL: return "partial";
    case SEMGIR_E_INTERNAL: return "internal";
  }
  return "unknown";
}

void semgir_options_init(semgir_options* o) {
  if (!o) return;
  std::memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->method = SEMGIR_METHOD_PATCH;
  o->runtime = SEMGIR_RUNTIME_ONNXRUNTIME;
  o->precision = nullptr;
  o->intra_threads = 0;
  o->verify_hashes = 1;
  o->max_pixels = semgir::kDefaultMaxPixels;
  o->max_bytes = semgir::kDefaultMaxBytes;
  o->steps = 4;
  o->max_new_tokens = 20;
  o->num_beams = 1;
  o->seed = 0;
  o->guidance_scale = 1.0;
}

semgir_status semgir_open(const char* export_dir, const semgir_options* options, semgir_engine** engine) {
  g_last_error.clear();
  if (!engine) return fail(SEMGIR_E_INVALID_ARGUMENT, "engine out-pointer is NULL");
  *engine = nullptr;
  if (!export_dir || !*export_dir) return fail(SEMGIR_E_INVALID_ARGUMENT, "export_dir is NULL or empty");
  semgir_options o;
  semgir_options_init(&o);
  if (options) {
    if (options->struct_size < sizeof(uint32_t) || options->struct_size > sizeof o)
      return fail(SEMGIR_E_INVALID_ARGUMENT, "options->struct_size is not sizeof(semgir_options); call "
                                             "semgir_options_init first");
    std::memcpy(&o, options, options->struct_size);
  }
  if (o.method != SEMGIR_METHOD_PATCH && o.method != SEMGIR_METHOD_SEMGIR) return fail(SEMGIR_E_INVALID_ARGUMENT, "unknown method");
  if (o.runtime != SEMGIR_RUNTIME_ONNXRUNTIME && o.runtime != SEMGIR_RUNTIME_OPENVINO)
    return fail(SEMGIR_E_INVALID_ARGUMENT, "unknown runtime");
  try {
    std::string precision = o.precision ? o.precision : "fp32";
    if (precision != "fp32" && precision != "fp16" && precision != "bf16")
      return fail(SEMGIR_E_INVALID_ARGUMENT, "precision must be fp32, fp16 or bf16, not '" + precision + "'");
    if (precision == "bf16" && o.runtime != SEMGIR_RUNTIME_OPENVINO)
      return fail(SEMGIR_E_UNSUPPORTED, "bf16 runs on the OpenVINO runtime (the fp32 graph with bf16 inference "
                                        "precision); ONNX Runtime takes fp32 or fp16 graphs");
    auto e = std::make_unique<semgir_engine>();
    e->max_pixels = o.max_pixels > 0 ? o.max_pixels : semgir::kDefaultMaxPixels;
    e->max_bytes = o.max_bytes > 0 ? o.max_bytes : semgir::kDefaultMaxBytes;
    semgir::LoadOptions lo;
    lo.precision = precision;
    lo.runtime = o.runtime == SEMGIR_RUNTIME_OPENVINO ? "openvino" : "onnxruntime";
    lo.verify_hashes = o.verify_hashes != 0;
    lo.session.intra_threads = o.intra_threads;
    if (o.method == SEMGIR_METHOD_SEMGIR) {
      semgir::SemgirSettings st;
      st.steps = o.steps > 0 ? o.steps : 4;
      st.max_new_tokens = o.max_new_tokens;
      st.num_beams = o.num_beams;
      st.seed = o.seed;
      st.guidance_scale = o.guidance_scale > 0 ? o.guidance_scale : 1.0;
      e->semgir = std::make_unique<semgir::SemgirModel>(export_dir, lo, st);
      e->method = "semgir";
      e->runtime = e->semgir->runtime_description();
      e->version = e->semgir->version();
      e->threshold = e->semgir->threshold();
      e->random_weights = e->semgir->random_weights();
    } else {
      e->patch = std::make_unique<semgir::PatchModel>(export_dir, lo);
      e->runtime = e->patch->runtime_description();
      e->version = e->patch->version();
      e->threshold = e->patch->threshold();
    }
    *engine = e.release();
    return SEMGIR_OK;
  } catch (const semgir::ExportError& ex) {
    return fail(SEMGIR_E_EXPORT, ex.what());
  } catch (const semgir::UnsupportedError& ex) {
    return fail(SEMGIR_E_UNSUPPORTED, ex.what());
  } catch (const semgir::RuntimeError& ex) {
    return fail(SEMGIR_E_RUNTIME, ex.what());
  } catch (const std::bad_alloc&) {
    return fail(SEMGIR_E_INTERNAL, "out of memory");
  } catch (const std::exception& ex) {
    return fail(SEMGIR_E_INTERNAL, ex.what());
  }
}

void semgir_close(semgir_engine* engine) { delete engine; }

const char* semgir_engine_model_version(const semgir_engine* e) { return e ? e->version.c_str() : ""; }
int32_t semgir_engine_random_weights(const semgir_engine* e) { return e && e->random_weights ? 1 : 0; }
const char* semgir_engine_method(const semgir_engine* e) { return e ? e->method.c_str() : ""; }
const char* semgir_engine_runtime(const semgir_engine* e) { return e ? e->runtime.c_str() : ""; }
double semgir_engine_threshold(const semgir_engine* e) {
  return e ? e->threshold : std::numeric_limits<double>::quiet_NaN();
}

semgir_status semgir_score_file(semgir_engine* e, const char* path, semgir_result* r) {
  if (!path) return fail(SEMGIR_E_INVALID_ARGUMENT, "path is NULL");
  Item it;
  it.path = path;
  return score_items(e, &it, 1, r);
}

semgir_status semgir_score_encoded(semgir_engine* e, const void* data, size_t size, semgir_result* r) {
  Item it;
  it.data = static_cast<const uint8_t*>(data);
  it.size = size;
  return score_items(e, &it, 1, r);
}

semgir_status semgir_score_rgb(semgir_engine* e, const semgir_rgb_image* image, semgir_result* r) {
  if (!image) return fail(SEMGIR_E_INVALID_ARGUMENT, "image is NULL");
  Item it;
  it.rgb = image;
  return score_items(e, &it, 1, r);
}

semgir_status semgir_score_files(semgir_engine* e, const char* const* paths, size_t count, semgir_result* r) {
  if (count && !paths) return fail(SEMGIR_E_INVALID_ARGUMENT, "paths is NULL");
  try {
    std::vector<Item> items(count);
    for (size_t i = 0; i < count; ++i) items[i].path = paths[i] ? paths[i] : "";
    return score_items(e, items.data(), count, r);
  } catch (const std::bad_alloc&) {
    return fail(SEMGIR_E_INTERNAL, "out of memory");
  }
}

void semgir_details_init(semgir_details* d) {
  if (!d) return;
  std::memset(d, 0, sizeof *d);
  d->struct_size = sizeof *d;
}

semgir_status semgir_score_files_details(semgir_engine* e, const char* const* paths, size_t count, semgir_result* r,
                                         semgir_details* details) {
  if (count && !paths) return fail(SEMGIR_E_INVALID_ARGUMENT, "paths is NULL");
  try {
    std::vector<Item> items(count);
    for (size_t i = 0; i < count; ++i) items[i].path = paths[i] ? paths[i] : "";
    return score_items(e, items.data(), count, r, count ? details : nullptr);
  } catch (const std::bad_alloc&) {
    return fail(SEMGIR_E_INTERNAL, "out of memory");
  }
}

semgir_status semgir_score_encoded_batch(semgir_engine* e, const void* const* data, const size_t* sizes, size_t count,
                                         semgir_result* r) {
  if (count && (!data || !sizes)) return fail(SEMGIR_E_INVALID_ARGUMENT, "data or sizes is NULL");
  try {
    std::vector<Item> items(count);
    for (size_t i = 0; i < count; ++i) {
      items[i].data = static_cast<const uint8_t*>(data[i]);
      items[i].size = sizes[i];
    }
    return score_items(e, items.data(), count, r);
  } catch (const std::bad_alloc&) {
    return fail(SEMGIR_E_INTERNAL, "out of memory");
  }
}

semgir_status semgir_score_rgb_batch(semgir_engine* e, const semgir_rgb_image* images, size_t count,
                                     semgir_result* r) {
  if (count && !images) return fail(SEMGIR_E_INVALID_ARGUMENT, "images is NULL");
  try {
    std::vector<Item> items(count);
    for (size_t i = 0; i < count; ++i) items[i].rgb = &images[i];
    return score_items(e, items.data(), count, r);
  } catch (const std::bad_alloc&) {
    return fail(SEMGIR_E_INTERNAL, "out of memory");
  }
}

semgir_status semgir_decode(const void* data, size_t size, int64_t max_pixels, semgir_image* image) {
  if (!image) return fail(SEMGIR_E_INVALID_ARGUMENT, "image is NULL");
  std::memset(image, 0, sizeof *image);
  try {
    semgir::RgbImage img = semgir::decode_image(static_cast<const uint8_t*>(data), data ? size : 0, max_pixels);
    image->data = static_cast<uint8_t*>(std::malloc(img.rgb.size()));
    if (!image->data) return fail(SEMGIR_E_INTERNAL, "out of memory");
    std::memcpy(image->data, img.rgb.data(), img.rgb.size());
    image->width = img.width;
    image->height = img.height;
    copy_str(image->note, sizeof image->note, img.note);
    return SEMGIR_OK;
  } catch (const semgir::InputError& ex) {
    return fail(SEMGIR_E_INPUT, ex.what());
  } catch (const std::exception& ex) {
    return fail(SEMGIR_E_INTERNAL, ex.what());
  }
}

void semgir_image_free(semgir_image* image) {
  if (!image) return;
  std::free(image->data);
  image->data = nullptr;
}

}  // extern "C"
