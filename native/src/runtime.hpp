// The one internal interface every native inference runtime implements: a session per exported
// graph (component). ONNX Runtime and OpenVINO implement it; a TensorRT one would too.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace semgir {

/// A tensor fed to or returned by a session: float32 (`data`), or int64 when `i64` is set (token ids;
/// inputs only, outputs are float32).
struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
  bool is_i64 = false;
  std::vector<int64_t> i64 = {};
};

/// Raised by runtimes; turned into SEMGIR_E_RUNTIME at the C boundary.
class RuntimeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Session {
 public:
  virtual ~Session() = default;
  /// Run the graph on named float32 / int64 inputs; returns the named outputs in the order asked.
  virtual std::vector<Tensor> run(const std::vector<Tensor>& inputs, const std::vector<std::string>& outputs) = 0;
  virtual std::string describe() const = 0;  // e.g. "onnxruntime 1.32.0"
  virtual std::vector<std::string> input_names() const = 0;
  virtual std::vector<std::string> output_names() const = 0;
};

struct SessionOptions {
  int intra_threads = 0;  // 0: $SEMGIR_ORT_THREADS, else the runtime's default
  bool bf16 = false;      // OpenVINO: bf16 inference precision (fp32 otherwise)
};

std::unique_ptr<Session> make_onnxruntime_session(const std::string& onnx_path, const SessionOptions& opt);
/// nullptr-free: throws RuntimeError when the library was built without OpenVINO.
std::unique_ptr<Session> make_openvino_session(const std::string& onnx_path, const SessionOptions& opt);
/// Comma-separated runtimes compiled in.
const char* runtimes_built();

int threads_from_env(int requested);

}  // namespace semgir
