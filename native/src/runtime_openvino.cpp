// OpenVINO session (the C++ runtime the PyPI `openvino` wheel ships), behind the same interface as
// ONNX Runtime. Graphs run with f32 inference precision, so results match the ORT path (on CPUs with
// bf16 support OpenVINO would otherwise pick bf16 by itself), or bf16 when asked (precision "bf16").
#include <openvino/openvino.hpp>

#include "runtime.hpp"

namespace semgir {
namespace {

ov::Core& core() {
  static ov::Core c;
  return c;
}

class OvSession final : public Session {
 public:
  OvSession(const std::string& path, const SessionOptions& opt) {
    try {
      std::shared_ptr<ov::Model> model = core().read_model(path);
      ov::AnyMap cfg{ov::hint::inference_precision(opt.bf16 ? ov::element::bf16 : ov::element::f32)};
      int threads = threads_from_env(opt.intra_threads);
      if (threads > 0) cfg.emplace(ov::inference_num_threads(threads));
      compiled_ = core().compile_model(model, "CPU", cfg);
      request_ = compiled_.create_infer_request();
      for (const auto& in : compiled_.inputs()) inputs_.push_back(in.get_any_name());
      for (const auto& out : compiled_.outputs()) outputs_.push_back(out.get_any_name());
    } catch (const std::exception& e) {
      throw RuntimeError(std::string("openvino cannot load ") + path + ": " + e.what());
    }
  }

  std::vector<Tensor> run(const std::vector<Tensor>& in, const std::vector<std::string>& outs) override {
    try {
      for (const auto& want : inputs_) {
        const Tensor* t = nullptr;
        for (const auto& x : in)
          if (x.name == want) t = &x;
        if (!t) throw RuntimeError("graph input '" + want + "' has no value");
        ov::Shape shape(t->shape.begin(), t->shape.end());
        if (t->is_i64)
          request_.set_tensor(want, ov::Tensor(ov::element::i64, shape, const_cast<int64_t*>(t->i64.data())));
        else
          request_.set_tensor(want, ov::Tensor(ov::element::f32, shape, const_cast<float*>(t->data.data())));
      }
      request_.infer();
      std::vector<Tensor> out;
      for (const auto& name : outs) {
        ov::Tensor r = request_.get_tensor(name);
        if (r.get_element_type() != ov::element::f32) throw RuntimeError("output '" + name + "' is not float32");
        Tensor t{name, {}, {}, false, {}};
        for (auto d : r.get_shape()) t.shape.push_back(int64_t(d));
        const float* p = r.data<const float>();
        t.data.assign(p, p + r.get_size());
        out.push_back(std::move(t));
      }
      return out;
    } catch (const RuntimeError&) {
      throw;
    } catch (const std::exception& e) {
      throw RuntimeError(std::string("openvino: ") + e.what());
    }
  }

  std::string describe() const override { return std::string("openvino ") + ov::get_openvino_version().buildNumber; }
  std::vector<std::string> input_names() const override { return inputs_; }
  std::vector<std::string> output_names() const override { return outputs_; }

 private:
  ov::CompiledModel compiled_;
  ov::InferRequest request_;  // one request: calls are serialised by the engine handle
  std::vector<std::string> inputs_, outputs_;
};

}  // namespace

std::unique_ptr<Session> make_openvino_session(const std::string& path, const SessionOptions& opt) {
  return std::make_unique<OvSession>(path, opt);
}

}  // namespace semgir
