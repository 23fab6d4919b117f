// AOTInductor backend: runs a `.pt2` package (temseg export --format aoti) through
// libtorch's torch::inductor::AOTIModelPackageLoader on the CPU. CMake target temseg::aoti
// (built with -DTEMSEG_WITH_TORCH=ON); this header has no torch includes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "temseg/segmenter.hpp"

namespace temseg {

class AotiBackend final : public Backend {
 public:
  /// Load the package. num_threads > 0 sets libtorch's intra-op threads. Throws
  /// std::runtime_error naming the file when it cannot be loaded or carries no temseg
  /// metadata.
  explicit AotiBackend(const std::string& package_path, int num_threads = 0);
  ~AotiBackend() override;
  AotiBackend(const AotiBackend&) = delete;
  AotiBackend& operator=(const AotiBackend&) = delete;

  std::string name() const override { return "aoti"; }
  std::int64_t num_classes() const override { return num_classes_; }
  bool outputs_probabilities() const override { return probabilities_; }
  std::int64_t max_batch() const override { return max_batch_; }
  void predict(const float* tiles, std::int64_t n, std::int64_t tile_h, std::int64_t tile_w,
               float* scores) override;

  /// The package metadata (temseg.* keys, see temseg/export/metadata.py).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  std::map<std::string, std::string> metadata_;
  std::int64_t num_classes_ = 0;
  std::int64_t max_batch_ = 0;
  bool probabilities_ = false;
};

}  // namespace temseg
