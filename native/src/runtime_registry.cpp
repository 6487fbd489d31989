// Which runtimes this build has; the OpenVINO entry point when it was not built in.
#include "runtime.hpp"

namespace semgir {

const char* runtimes_built() {
#ifdef SEMGIR_WITH_OPENVINO
  return "onnxruntime,openvino";
#else
  return "onnxruntime";
#endif
}

#ifndef SEMGIR_WITH_OPENVINO
std::unique_ptr<Session> make_openvino_session(const std::string&, const SessionOptions&) {
  throw RuntimeError("this libsemgir was built without OpenVINO (configure with -DSEMGIR_WITH_OPENVINO=ON and "
                     "OpenVINO_DIR pointing at an OpenVINO install, e.g. the PyPI wheel)");
}
#endif

}  // namespace semgir
