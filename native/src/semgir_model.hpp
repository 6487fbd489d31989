// The SemGIR method over an export directory, in C++ (engine/semgir/pipeline.py on the exported graphs):
// BLIP captioning (preprocessing, vision graph, greedy decoding with the key/value-cache decoder graphs,
// WordPiece to text), regeneration (CLIP BPE tokenizer, SD text encoder, DPM-Solver++ 2M loop with the
// portable initial noise, classifier-free guidance, VAE decoder, rounding to uint8), CLIP image
// embeddings of both images, the head and its softmax. Same manifest, same numbers as the Python
// ONNX Runtime backend (tests/native_fixtures.py records its rows).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "decode.hpp"
#include "patch.hpp"
#include "runtime.hpp"

namespace semgir {

/// engine/semgir/pipeline.py:initial_noise: `n` standard normal float32 values of one image's latents.
std::vector<float> initial_noise(uint64_t seed, size_t n);
/// engine/semgir/pipeline.py:image_seed (content of the sha256 hex, the run's seed).
uint64_t image_seed(int64_t seed, const std::string& sha256_hex);

/// engine/runtime/tokenizers.py:WordPieceDecoder (special ids dropped, "##" glued, cleanup) + strip.
class WordPieceDecoder {
 public:
  WordPieceDecoder() = default;
  WordPieceDecoder(const std::string& vocab_file, const std::vector<int64_t>& special_ids);
  std::string decode(const std::vector<int64_t>& ids) const;

 private:
  std::vector<std::string> vocab_;
  std::vector<int64_t> special_;
};

/// engine/runtime/tokenizers.py:ClipBpeTokenizer (open_clip's byte-level BPE). Text cleanup: ftfy's
/// character fixes (curly quotes, fullwidth forms, Latin ligatures; not its mojibake repair or NFC),
/// Unicode whitespace collapsed, lower-cased (towlower beyond ASCII); letters beyond ASCII by glibc's
/// C.UTF-8 alpha class, numbers ASCII digits only. HTML entities are not unescaped (Python's are).
class ClipBpeTokenizer {
 public:
  ClipBpeTokenizer() = default;
  ClipBpeTokenizer(const std::string& bpe_gz, int context_length, int64_t pad_id);
  std::vector<int64_t> encode(const std::string& text) const;  // no SOT/EOT
  /// (N, context_length) row-major: SOT tokens EOT, padded; truncated keeping EOT last.
  std::vector<int64_t> operator()(const std::vector<std::string>& texts) const;
  int context_length() const { return context_length_; }

 private:
  std::vector<std::string> bpe(const std::string& word) const;
  std::unordered_map<std::string, int64_t> vocab_;
  std::unordered_map<std::string, int> ranks_;
  std::string byte_sym_[256];
  int64_t sot_ = 0, eot_ = 0, pad_ = 0;
  int context_length_ = 77;
};

struct SemgirSettings {
  int steps = 4;               // RegenConfig.steps
  double guidance_scale = 1.0;  // > 1: classifier-free guidance
  int64_t seed = 0;            // the run's seed (image_seed)
  int max_new_tokens = 20;     // <= 0: the weights' generation config
  int num_beams = 1;           // <= 0: the weights' generation config; > 1: beam search
};

struct ImagePrep {
  int size = 0;
  std::string resize = "stretch", crop = "center", interpolation = "bicubic";
  float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
};

struct SemgirOutput {
  std::vector<double> p_ai;
  std::vector<std::string> captions;
  std::vector<std::vector<uint8_t>> regenerated;  // R x R x 3 each
  std::map<std::string, double> timings_ms;       // caption, regenerate, embed, head: per image
};

class SemgirModel {
 public:
  SemgirModel(const std::string& export_dir, const LoadOptions& opt, const SemgirSettings& settings);
  SemgirOutput run(const std::vector<const RgbImage*>& images, const std::vector<std::string>& sha256s);

  std::vector<std::string> caption(const std::vector<const RgbImage*>& images);
  std::vector<std::vector<uint8_t>> regenerate(const std::vector<std::string>& captions,
                                               const std::vector<uint64_t>& seeds);
  /// (N, dim) CLIP image embeddings
  std::vector<float> embed(const std::vector<const RgbImage*>& images);
  std::vector<double> classify(const std::vector<float>& features, size_t n);
  /// float32 (N, 3, S, S), engine/preprocess.py:preprocess_batch
  static std::vector<float> preprocess(const std::vector<const RgbImage*>& images, const ImagePrep& pp);

  const std::string& version() const { return version_; }
  double threshold() const { return threshold_; }
  bool random_weights() const { return random_weights_; }
  int resolution() const { return resolution_; }
  const std::string& runtime_description() const { return runtime_desc_; }

 private:
  std::vector<Tensor> call(const std::string& name, const std::vector<Tensor>& in,
                           const std::vector<std::string>& outs);
  std::vector<int64_t> greedy(const std::vector<float>& enc, const std::vector<int64_t>& enc_shape, size_t n,
                              size_t* length);
  std::vector<int64_t> beam_search(const std::vector<float>& enc, const std::vector<int64_t>& enc_shape, size_t n,
                                   size_t* length);
  void process(const std::vector<int64_t>& seq, float* scores, size_t V) const;

  std::map<std::string, std::unique_ptr<Session>> sessions_;
  SemgirSettings settings_;
  ImagePrep blip_pre_, clip_pre_;
  WordPieceDecoder wordpiece_;
  ClipBpeTokenizer sd_tok_;
  // generation settings (engine/semgir/decoding.py:GenerationSettings)
  int64_t bos_ = 0, eos_ = 0, pad_ = 0;
  int max_length_ = 21, min_length_ = 0, no_repeat_ngram_ = 0;
  float repetition_penalty_ = 1.0f;
  int num_beams_ = 1, early_stopping_ = 0;  // early_stopping: 0 false, 1 true, 2 "never"
  double length_penalty_ = 1.0;
  // regenerator
  std::map<std::string, double> sched_num_;
  std::string sched_spacing_ = "linspace", beta_schedule_ = "scaled_linear";
  int latent_channels_ = 4, vae_scale_ = 8, resolution_ = 512, dim_ = 0;
  float scaling_factor_ = 0.18215f;
  double threshold_ = 0.5;
  bool random_weights_ = false;
  std::string version_, runtime_desc_;
};

}  // namespace semgir
