#include "temseg/backends/aoti_backend.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cstring>
#include <stdexcept>
#include <vector>

namespace temseg {

struct AotiBackend::Impl {
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
};

namespace {

std::int64_t meta_int(const std::map<std::string, std::string>& m, const std::string& key,
                      const std::string& path, std::int64_t fallback = -1) {
  auto it = m.find(key);
  if (it == m.end() || it->second.empty()) {
    if (fallback >= 0) return fallback;
    throw std::runtime_error(path + ": package metadata lacks " + key +
                             " (export it with `temseg export --format aoti`)");
  }
  return std::stoll(it->second);
}

}  // namespace

AotiBackend::AotiBackend(const std::string& package_path, int num_threads)
    : impl_(std::make_unique<Impl>()), path_(package_path) {
  if (num_threads > 0) at::set_num_threads(num_threads);
  try {
    impl_->loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(package_path);
  } catch (const std::exception& e) {
    throw std::runtime_error(package_path + ": cannot load AOTInductor package: " + e.what());
  }
  for (const auto& kv : impl_->loader->get_metadata())
    if (kv.first.rfind("temseg.", 0) == 0) metadata_[kv.first] = kv.second;
  num_classes_ = meta_int(metadata_, "temseg.num_classes", path_);
  max_batch_ = meta_int(metadata_, "temseg.max_batch", path_, 0);
  auto out = metadata_.find("temseg.output");
  probabilities_ = out != metadata_.end() && out->second == "probabilities";
}

AotiBackend::~AotiBackend() = default;

void AotiBackend::predict(const float* tiles, std::int64_t n, std::int64_t tile_h,
                          std::int64_t tile_w, float* scores) {
  c10::InferenceMode guard;
  // from_blob does not copy; the package only reads its input.
  at::Tensor input = at::from_blob(const_cast<float*>(tiles), {n, 1, tile_h, tile_w},
                                   at::TensorOptions().dtype(at::kFloat));
  std::vector<at::Tensor> outputs;
  try {
    outputs = impl_->loader->run({input});
  } catch (const std::exception& e) {
    throw std::runtime_error(path_ + ": AOTInductor run failed for a (" + std::to_string(n) +
                             ", 1, " + std::to_string(tile_h) + ", " + std::to_string(tile_w) +
                             ") batch: " + e.what());
  }
  if (outputs.size() != 1)
    throw std::runtime_error(path_ + ": package returned " + std::to_string(outputs.size()) +
                             " outputs, expected 1");
  at::Tensor out = outputs[0].to(at::kFloat).contiguous();
  const std::vector<std::int64_t> want{n, num_classes_, tile_h, tile_w};
  if (out.sizes().vec() != want)
    throw std::runtime_error(path_ + ": package output has shape " +
                             c10::str(out.sizes()) + ", expected (" + std::to_string(n) + ", " +
                             std::to_string(num_classes_) + ", " + std::to_string(tile_h) +
                             ", " + std::to_string(tile_w) + ")");
  std::memcpy(scores, out.data_ptr<float>(), static_cast<std::size_t>(out.numel()) * sizeof(float));
}

}  // namespace temseg
