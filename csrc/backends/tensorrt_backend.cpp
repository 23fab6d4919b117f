// Compiled only when CUDA and TensorRT >= 10 are available (see CMakeLists.txt).
#include "temseg/backends/tensorrt_backend.hpp"

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#if NV_TENSORRT_MAJOR < 10
#error "temseg's TensorRT backend needs TensorRT >= 10 (enqueueV3, tensor-name API)"
#endif

namespace temseg {

namespace {

void cuda_check(cudaError_t err, const std::string& what, const std::string& path) {
  if (err != cudaSuccess)
    throw std::runtime_error(path + ": " + what + ": " + cudaGetErrorString(err));
}

class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
  }
};

struct DeviceBuffer {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  void reserve(std::size_t want, const std::string& path) {
    if (want <= bytes) return;
    if (ptr != nullptr) cudaFree(ptr);
    ptr = nullptr;
    cuda_check(cudaMalloc(&ptr, want), "cudaMalloc", path);
    bytes = want;
  }
  ~DeviceBuffer() {
    if (ptr != nullptr) cudaFree(ptr);
  }
};

}  // namespace

struct TensorRTBackend::Impl {
  Logger logger;
  std::unique_ptr<nvinfer1::IRuntime> runtime;
  std::unique_ptr<nvinfer1::ICudaEngine> engine;
  std::unique_ptr<nvinfer1::IExecutionContext> context;
  cudaStream_t stream = nullptr;
  int device = 0;
  std::string input, output;
  nvinfer1::DataType output_type = nvinfer1::DataType::kFLOAT;
  struct Range {
    nvinfer1::Dims lo, hi;
  };
  std::vector<Range> profiles;
  int profile = -1;
  DeviceBuffer d_in, d_out;

  ~Impl() {
    context.reset();  // destroy in reverse order of creation
    engine.reset();
    runtime.reset();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

TensorRTBackend::TensorRTBackend(const std::string& engine_path, int device)
    : impl_(std::make_unique<Impl>()), path_(engine_path) {
  metadata_ = read_metadata_json(engine_path + ".json");
  auto get = [&](const std::string& key) -> const std::string& {
    auto it = metadata_.find(key);
    if (it == metadata_.end())
      throw std::runtime_error(engine_path + ".json: missing key " + key);
    return it->second;
  };
  num_classes_ = std::stoll(get("temseg.num_classes"));
  probabilities_ = get("temseg.output") == "probabilities";

  std::ifstream in(engine_path, std::ios::binary);
  if (!in) throw std::runtime_error(engine_path + ": cannot open engine file");
  const std::vector<char> blob((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
  impl_->device = device;
  cuda_check(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")", path_);
  cuda_check(cudaStreamCreate(&impl_->stream), "cudaStreamCreate", path_);
  impl_->runtime.reset(nvinfer1::createInferRuntime(impl_->logger));
  if (!impl_->runtime) throw std::runtime_error(path_ + ": createInferRuntime failed");
  impl_->engine.reset(impl_->runtime->deserializeCudaEngine(blob.data(), blob.size()));
  if (!impl_->engine)
    throw std::runtime_error(path_ + ": cannot deserialise the engine (built by another "
                             "TensorRT version or for another GPU?)");
  impl_->context.reset(impl_->engine->createExecutionContext());
  if (!impl_->context) throw std::runtime_error(path_ + ": createExecutionContext failed");

  for (int i = 0; i < impl_->engine->getNbIOTensors(); ++i) {
    const char* name = impl_->engine->getIOTensorName(i);
    if (impl_->engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT)
      impl_->input = name;
    else
      impl_->output = name;
  }
  if (impl_->input.empty() || impl_->output.empty())
    throw std::runtime_error(path_ + ": engine must have one input and one output tensor");
  impl_->output_type = impl_->engine->getTensorDataType(impl_->output.c_str());
  if (impl_->output_type != nvinfer1::DataType::kFLOAT ||
      impl_->engine->getTensorDataType(impl_->input.c_str()) != nvinfer1::DataType::kFLOAT)
    throw std::runtime_error(path_ + ": engine I/O must be float32 (temseg exports float32 "
                             "I/O for every precision)");
  for (int k = 0; k < impl_->engine->getNbOptimizationProfiles(); ++k) {
    Impl::Range r;
    r.lo = impl_->engine->getProfileShape(impl_->input.c_str(), k,
                                          nvinfer1::OptProfileSelector::kMIN);
    r.hi = impl_->engine->getProfileShape(impl_->input.c_str(), k,
                                          nvinfer1::OptProfileSelector::kMAX);
    impl_->profiles.push_back(r);
    max_batch_ = std::max<std::int64_t>(max_batch_, r.hi.d[0]);
  }
}

TensorRTBackend::~TensorRTBackend() = default;

void TensorRTBackend::predict(const float* tiles, std::int64_t n, std::int64_t tile_h,
                              std::int64_t tile_w, float* scores) {
  Impl& m = *impl_;
  const std::int64_t shape[4] = {n, 1, tile_h, tile_w};
  int k = -1;
  for (std::size_t p = 0; p < m.profiles.size() && k < 0; ++p) {
    bool inside = m.profiles[p].lo.nbDims == 4;
    for (int d = 0; d < 4 && inside; ++d)
      inside = m.profiles[p].lo.d[d] <= shape[d] && shape[d] <= m.profiles[p].hi.d[d];
    if (inside) k = static_cast<int>(p);
  }
  if (k < 0)
    throw std::runtime_error(path_ + ": no optimisation profile holds a (" + std::to_string(n) +
                             ", 1, " + std::to_string(tile_h) + ", " + std::to_string(tile_w) +
                             ") batch; rebuild the engine with matching --tile-sizes/--batch");
  cuda_check(cudaSetDevice(m.device), "cudaSetDevice", path_);
  if (k != m.profile) {
    if (!m.context->setOptimizationProfileAsync(k, m.stream))
      throw std::runtime_error(path_ + ": setOptimizationProfileAsync failed");
    m.profile = k;
  }
  nvinfer1::Dims4 dims(n, 1, tile_h, tile_w);
  if (!m.context->setInputShape(m.input.c_str(), dims))
    throw std::runtime_error(path_ + ": setInputShape rejected the batch shape");
  const std::size_t in_bytes = static_cast<std::size_t>(n * tile_h * tile_w) * sizeof(float);
  const std::size_t out_bytes = in_bytes * static_cast<std::size_t>(num_classes_);
  m.d_in.reserve(in_bytes, path_);
  m.d_out.reserve(out_bytes, path_);
  cuda_check(cudaMemcpyAsync(m.d_in.ptr, tiles, in_bytes, cudaMemcpyHostToDevice, m.stream),
             "cudaMemcpyAsync (tiles)", path_);
  if (!m.context->setTensorAddress(m.input.c_str(), m.d_in.ptr) ||
      !m.context->setTensorAddress(m.output.c_str(), m.d_out.ptr))
    throw std::runtime_error(path_ + ": setTensorAddress failed");
  if (!m.context->enqueueV3(m.stream)) throw std::runtime_error(path_ + ": enqueueV3 failed");
  cuda_check(cudaMemcpyAsync(scores, m.d_out.ptr, out_bytes, cudaMemcpyDeviceToHost, m.stream),
             "cudaMemcpyAsync (scores)", path_);
  cuda_check(cudaStreamSynchronize(m.stream), "cudaStreamSynchronize", path_);
}

}  // namespace temseg
