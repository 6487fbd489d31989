// ONNX Runtime session (the C/C++ API of the libonnxruntime the PyPI wheel ships, or a user's own).
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "runtime.hpp"

namespace semgir {

int threads_from_env(int requested) {
  if (requested > 0) return requested;
  const char* env = std::getenv("SEMGIR_ORT_THREADS");
  return env ? std::max(0, std::atoi(env)) : 0;
}

namespace {

Ort::Env& env() {
  static Ort::Env e(ORT_LOGGING_LEVEL_WARNING, "semgir");
  return e;
}

class OrtSession final : public Session {
 public:
  OrtSession(const std::string& path, const SessionOptions& opt) {
    try {
      Ort::SessionOptions so;
      // like engine/runtime/ort.py: no spinning worker threads, explicit thread count when given
      so.AddConfigEntry("session.intra_op.allow_spinning", "0");
      so.AddConfigEntry("session.inter_op.allow_spinning", "0");
      int threads = threads_from_env(opt.intra_threads);
      if (threads > 0) {
        so.SetIntraOpNumThreads(threads);
        so.SetInterOpNumThreads(1);
      }
      so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
      session_ = std::make_unique<Ort::Session>(env(), path.c_str(), so);
      Ort::AllocatorWithDefaultOptions alloc;
      for (size_t i = 0; i < session_->GetInputCount(); ++i)
        inputs_.push_back(session_->GetInputNameAllocated(i, alloc).get());
      for (size_t i = 0; i < session_->GetOutputCount(); ++i)
        outputs_.push_back(session_->GetOutputNameAllocated(i, alloc).get());
    } catch (const Ort::Exception& e) {
      throw RuntimeError(std::string("onnxruntime cannot load ") + path + ": " + e.what());
    }
  }

  std::vector<Tensor> run(const std::vector<Tensor>& in, const std::vector<std::string>& outs) override {
    try {
      Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
      std::vector<Ort::Value> values;
      std::vector<const char*> names;
      for (const auto& want : inputs_) {  // feeds built from the session's own inputs
        const Tensor* t = nullptr;
        for (const auto& x : in)
          if (x.name == want) t = &x;
        if (!t) throw RuntimeError("graph input '" + want + "' has no value");
        if (t->is_i64)
          values.push_back(Ort::Value::CreateTensor<int64_t>(mem, const_cast<int64_t*>(t->i64.data()), t->i64.size(),
                                                             t->shape.data(), t->shape.size()));
        else
          values.push_back(Ort::Value::CreateTensor<float>(mem, const_cast<float*>(t->data.data()), t->data.size(),
                                                           t->shape.data(), t->shape.size()));
        names.push_back(want.c_str());
      }
      std::vector<const char*> onames;
      for (const auto& o : outs) onames.push_back(o.c_str());
      auto res = session_->Run(Ort::RunOptions{nullptr}, names.data(), values.data(), values.size(), onames.data(),
                               onames.size());
      std::vector<Tensor> out;
      for (size_t i = 0; i < res.size(); ++i) {
        auto info = res[i].GetTensorTypeAndShapeInfo();
        if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
          throw RuntimeError("output '" + outs[i] + "' is not float32");
        Tensor t{outs[i], info.GetShape(), {}, false, {}};
        const float* p = res[i].GetTensorData<float>();
        t.data.assign(p, p + info.GetElementCount());
        out.push_back(std::move(t));
      }
      return out;
    } catch (const Ort::Exception& e) {
      throw RuntimeError(std::string("onnxruntime: ") + e.what());
    }
  }

  std::string describe() const override { return std::string("onnxruntime ") + Ort::GetVersionString(); }
  std::vector<std::string> input_names() const override { return inputs_; }
  std::vector<std::string> output_names() const override { return outputs_; }

 private:
  std::unique_ptr<Ort::Session> session_;
  std::vector<std::string> inputs_, outputs_;
};

}  // namespace

std::unique_ptr<Session> make_onnxruntime_session(const std::string& path, const SessionOptions& opt) {
  return std::make_unique<OrtSession>(path, opt);
}

}  // namespace semgir
