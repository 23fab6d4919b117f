// TensorRT backend: runs a serialised engine (temseg export --format tensorrt) with
// enqueueV3 on a CUDA stream. CMake target temseg::tensorrt, built only when CUDA and
// TensorRT (NvInfer.h, libnvinfer) are found; this header has no CUDA/TensorRT includes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "temseg/segmenter.hpp"

namespace temseg {

class TensorRTBackend final : public Backend {
 public:
  /// Deserialise `engine_path` on CUDA device `device`; the metadata is read from
  /// `engine_path + ".json"`. Throws std::runtime_error naming the file on failure.
  explicit TensorRTBackend(const std::string& engine_path, int device = 0);
  ~TensorRTBackend() override;
  TensorRTBackend(const TensorRTBackend&) = delete;
  TensorRTBackend& operator=(const TensorRTBackend&) = delete;

  std::string name() const override { return "tensorrt"; }
  std::int64_t num_classes() const override { return num_classes_; }
  bool outputs_probabilities() const override { return probabilities_; }
  /// Largest batch of the engine's optimisation profiles.
  std::int64_t max_batch() const override { return max_batch_; }
  /// Copies the tiles to the device, selects the optimisation profile whose range holds
  /// (n, 1, tile_h, tile_w), binds tensor addresses, enqueueV3, copies the scores back.
  void predict(const float* tiles, std::int64_t n, std::int64_t tile_h, std::int64_t tile_w,
               float* scores) override;

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
