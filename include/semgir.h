/*
 * semgir.h: the C API of libsemgir, the native runtime of semgir-engine.
 *
 * It scores images with the graphs that `semgir-engine export` writes (manifest.json + *.onnx),
 * with the same decoding, preprocessing, calibration and threshold as the Python runtime.
 *
 *   semgir_options opt;
 *   semgir_options_init(&opt);
 *   semgir_engine *eng = NULL;
 *   if (semgir_open("patch-export", &opt, &eng) != SEMGIR_OK) { puts(semgir_last_error()); ... }
 *   semgir_result r;
 *   semgir_score_file(eng, "a.jpg", &r);       // r.status, r.p_ai, r.label, r.error, r.timing
 *   semgir_close(eng);
 *
 * The SemGIR method (an export with `--components all`): opt.method = SEMGIR_METHOD_SEMGIR (and
 * opt.steps, opt.seed, opt.guidance_scale, opt.max_new_tokens, opt.num_beams); captions and stage
 * times come from semgir_score_files_details.
 *
 * Rules of the boundary: plain C types only (no exceptions, no STL); every struct a caller passes
 * in starts with `struct_size` so that later versions can add fields; strings a function returns
 * belong to the library (valid until the handle is closed, or for semgir_last_error until the
 * next call on the same thread). One handle may be used from several threads at once: decoding
 * runs in parallel, model calls are serialised per handle.
 */
#ifndef SEMGIR_H
#define SEMGIR_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  define SEMGIR_API __declspec(dllexport)
#else
#  define SEMGIR_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Version of this header's API; semgir_api_version() returns the library's. */
#define SEMGIR_API_VERSION 2

typedef enum semgir_status {
    SEMGIR_OK = 0,
    SEMGIR_E_INVALID_ARGUMENT = 1, /* NULL pointer, bad size, bad option, closed handle */
    SEMGIR_E_INPUT = 2,            /* this image: unreadable, empty, corrupt, truncated, too large, unsupported */
    SEMGIR_E_EXPORT = 3,           /* export dir: missing/invalid manifest, graph missing or hash mismatch */
    SEMGIR_E_RUNTIME = 4,          /* the inference runtime failed (or is not built in) */
    SEMGIR_E_UNSUPPORTED = 5,      /* a method or option this build does not implement */
    SEMGIR_E_PARTIAL = 6,          /* batch calls: some items failed (see each result's status) */
    SEMGIR_E_INTERNAL = 7          /* out of memory or an unexpected failure */
} semgir_status;

typedef enum semgir_method { SEMGIR_METHOD_PATCH = 0, SEMGIR_METHOD_SEMGIR = 1 } semgir_method;

typedef enum semgir_runtime {
    SEMGIR_RUNTIME_ONNXRUNTIME = 0,
    SEMGIR_RUNTIME_OPENVINO = 1 /* only when the library was built with OpenVINO */
} semgir_runtime;

typedef enum semgir_label { SEMGIR_LABEL_NONE = -1, SEMGIR_LABEL_REAL = 0, SEMGIR_LABEL_AI = 1 } semgir_label;

typedef struct semgir_options {
    uint32_t struct_size;   /* sizeof(semgir_options); set by semgir_options_init */
    semgir_method method;   /* default SEMGIR_METHOD_PATCH */
    semgir_runtime runtime; /* default SEMGIR_RUNTIME_ONNXRUNTIME */
    const char *precision;  /* "fp32" (default when NULL) or "fp16": which exported graph to load;
                               "bf16": OpenVINO only, the fp32 graph with bf16 inference precision */
    int32_t intra_threads;  /* runtime threads; 0 = $SEMGIR_ORT_THREADS, else the runtime's default */
    int32_t verify_hashes;  /* 1 (default): check each graph's sha256 against the manifest at open */
    int64_t max_pixels;     /* decompression-bomb guard; default 64,000,000 like the Python runtime */
    int64_t max_bytes;      /* largest file / buffer accepted; default 256 MiB */
    /* SemGIR method only (added in API version 2; callers built against version 1 get the defaults,
       which are the Python CLI's): */
    int32_t steps;          /* regeneration steps (DPM-Solver++); default 4; <= 0 = default */
    int32_t max_new_tokens; /* caption length; default 20; <= 0 = the weights' generation config */
    int32_t num_beams;      /* caption beams; default 1 (greedy), > 1 beam search; <= 0 = the weights' config */
    int32_t reserved0;
    int64_t seed;           /* the run's seed (per-image noise: engine/semgir/pipeline.py:image_seed); default 0 */
    double guidance_scale;  /* classifier-free guidance; default 1.0 (off); <= 0 = default */
} semgir_options;

/** An 8-bit RGB image in memory: `height` rows of `stride` bytes, 3 bytes per pixel (R, G, B). */
typedef struct semgir_rgb_image {
    const uint8_t *data;
    int32_t width;
    int32_t height;
    int32_t stride; /* bytes per row; 0 = width * 3 */
} semgir_rgb_image;

#define SEMGIR_ERROR_LEN 512
#define SEMGIR_NOTE_LEN 256

/** One scored (or failed) input; field meanings as the Python CLI's row. */
typedef struct semgir_result {
    semgir_status status; /* SEMGIR_OK, or why this item failed */
    double p_ai;          /* calibrated probability that the image is AI-generated; NaN on error */
    semgir_label label;   /* AI if p_ai >= threshold; NONE on error */
    int32_t width;        /* decoded size (after EXIF rotation); 0 on error */
    int32_t height;
    char sha256[65];      /* hex sha256 of the encoded bytes (of the RGB bytes for pixel input); "" if unknown */
    char error[SEMGIR_ERROR_LEN]; /* "" when status is SEMGIR_OK */
    char note[SEMGIR_NOTE_LEN];   /* conversions made (CMYK, 16-bit, alpha, animation); "" if none */
    double decode_ms;     /* reading + decoding this item */
    double model_ms;      /* this item's share of preprocessing + inference + calibration of its batch */
} semgir_result;

#define SEMGIR_CAPTION_LEN 512

/** What the SemGIR method adds to a result (semgir_score_files_details). The caller sets
 *  struct_size (semgir_details_init) in every element; the array's stride is details[0].struct_size.
 *  For the patch method the caption is "" and the stage times are 0. */
typedef struct semgir_details {
    uint32_t struct_size;
    char caption[SEMGIR_CAPTION_LEN]; /* the BLIP caption (UTF-8; truncated to fit) */
    double caption_ms;    /* this item's share of each stage of its batch, as the Python row's timings_ms */
    double regenerate_ms;
    double embed_ms;
    double head_ms;
} semgir_details;

/** A decoded image owned by the library (semgir_decode); free with semgir_image_free. */
typedef struct semgir_image {
    uint8_t *data; /* width * height * 3 bytes, RGB */
    int32_t width;
    int32_t height;
    char note[SEMGIR_NOTE_LEN];
} semgir_image;

typedef struct semgir_engine semgir_engine;

/** Library version string, e.g. "0.1.0". */
SEMGIR_API const char *semgir_version(void);
/** API version the library implements (SEMGIR_API_VERSION it was built with). */
SEMGIR_API int32_t semgir_api_version(void);
/** Comma-separated runtimes built into this library, e.g. "onnxruntime,openvino". */
SEMGIR_API const char *semgir_runtimes(void);
/** Message of the last failed call on this thread ("" if none). */
SEMGIR_API const char *semgir_last_error(void);
/** Short name of a status code. */
SEMGIR_API const char *semgir_status_name(semgir_status status);

SEMGIR_API void semgir_options_init(semgir_options *options);

/** Open an export directory. `options` may be NULL (defaults). On failure *engine stays NULL and
 *  semgir_last_error() says why. */
SEMGIR_API semgir_status semgir_open(const char *export_dir, const semgir_options *options, semgir_engine **engine);
/** Close a handle (NULL is fine). No call on it may be running or follow. */
SEMGIR_API void semgir_close(semgir_engine *engine);

/** What an open handle runs: strings owned by the handle. */
SEMGIR_API const char *semgir_engine_model_version(const semgir_engine *engine);
SEMGIR_API const char *semgir_engine_method(const semgir_engine *engine);
SEMGIR_API const char *semgir_engine_runtime(const semgir_engine *engine);
SEMGIR_API double semgir_engine_threshold(const semgir_engine *engine);

/* Scoring. Single-item calls return the item's status (also in result->status). Batch calls score
 * the decodable items together and return SEMGIR_OK, SEMGIR_E_PARTIAL when some items failed, or a
 * call-level error (then every result carries it). `results` holds `count` structs. */
SEMGIR_API semgir_status semgir_score_file(semgir_engine *engine, const char *path, semgir_result *result);
SEMGIR_API semgir_status semgir_score_encoded(semgir_engine *engine, const void *data, size_t size,
                                              semgir_result *result);
SEMGIR_API semgir_status semgir_score_rgb(semgir_engine *engine, const semgir_rgb_image *image,
                                          semgir_result *result);
SEMGIR_API semgir_status semgir_score_files(semgir_engine *engine, const char *const *paths, size_t count,
                                            semgir_result *results);
SEMGIR_API semgir_status semgir_score_encoded_batch(semgir_engine *engine, const void *const *data,
                                                    const size_t *sizes, size_t count, semgir_result *results);
SEMGIR_API semgir_status semgir_score_rgb_batch(semgir_engine *engine, const semgir_rgb_image *images,
                                                size_t count, semgir_result *results);

/** semgir_score_files plus each item's SemGIR details (`details` may be NULL: then it is that call). */
SEMGIR_API void semgir_details_init(semgir_details *details);
SEMGIR_API semgir_status semgir_score_files_details(semgir_engine *engine, const char *const *paths, size_t count,
                                                    semgir_result *results, semgir_details *details);
/** 1 when the export's weights are random or tiny (test) weights: scores are meaningless and the
 *  SemGIR method withholds labels (SEMGIR_LABEL_NONE), as the Python runtime does; else 0. */
SEMGIR_API int32_t semgir_engine_random_weights(const semgir_engine *engine);

/** Decode encoded bytes exactly as the engine does (EXIF rotation, alpha on white, 16-bit, CMYK,
 *  palette, first frame; `max_pixels` <= 0 means the default). Free `image` with semgir_image_free. */
SEMGIR_API semgir_status semgir_decode(const void *data, size_t size, int64_t max_pixels, semgir_image *image);
SEMGIR_API void semgir_image_free(semgir_image *image);

#ifdef __cplusplus
}
#endif
#endif /* SEMGIR_H */
