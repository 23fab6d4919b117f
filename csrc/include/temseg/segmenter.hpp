// Embedded runtime: a Segmenter owns the tiler core and a model backend and turns a raw
// image buffer (uint8 / uint16 / float32, any row stride) into a label image.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "temseg/extract.hpp"
#include "temseg/image_view.hpp"
#include "temseg/window.hpp"

namespace temseg {

/// Runs the model on a batch of tiles. Implementations: IntensityBackend (trivial, CPU,
/// for tests), AotiBackend (libtorch AOTInductor package, temseg::aoti), TensorRTBackend
/// (serialised engine, temseg::tensorrt).
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual std::int64_t num_classes() const = 0;
  /// True when predict() returns probabilities (or any scores to blend as they are);
  /// false when it returns logits, which the Segmenter turns into probabilities with a
  /// softmax over the classes before blending.
  virtual bool outputs_probabilities() const = 0;
  /// Largest batch predict() accepts (0: no limit).
  virtual std::int64_t max_batch() const { return 0; }
  /// tiles: contiguous float32 (n, 1, tile_h, tile_w) normalised tiles;
  /// scores: contiguous float32 (n, num_classes(), tile_h, tile_w) output.
  virtual void predict(const float* tiles, std::int64_t n, std::int64_t tile_h,
                       std::int64_t tile_w, float* scores) = 0;
};

/// Trivial CPU backend: a per-pixel nearest-intensity classifier, score of class c
/// s_c = 1 / (1 + (x - mu_c)^2) with mu_c = -1 + 2c / (C - 1) evenly spaced in [-1, 1]
/// (float32, outputs_probabilities() is true: scores are blended as they are). It exercises
/// the whole C++ path without a model and is reproduced exactly by the Python tests.
class IntensityBackend final : public Backend {
 public:
  explicit IntensityBackend(std::int64_t num_classes = 5, std::int64_t max_batch = 0);
  std::string name() const override { return "intensity"; }
  std::int64_t num_classes() const override { return num_classes_; }
  bool outputs_probabilities() const override { return true; }
  std::int64_t max_batch() const override { return max_batch_; }
  void predict(const float* tiles, std::int64_t n, std::int64_t tile_h, std::int64_t tile_w,
               float* scores) override;
  /// Number of predict() calls and tiles seen so far (for tests).
  std::int64_t calls() const { return calls_; }
  std::int64_t tiles_seen() const { return tiles_seen_; }

 private:
  std::int64_t num_classes_, max_batch_;
  std::int64_t calls_ = 0, tiles_seen_ = 0;
};

/// Per-image percentile normalisation (temseg.data.normalize.Normalization): the `lower`
/// and `upper` percentiles of the image (numpy "linear" method, on a strided subsample of
/// at most ~max_samples pixels) map to -1 and +1.
struct PercentileNormalization {
  double lower = 0.5;
  double upper = 99.5;
  std::int64_t max_samples = 4000000;
};

/// (offset, scale) with normalised = (x - offset) * scale, computed like
/// Normalization.affine in Python (same subsample, same float32/float64 arithmetic, so the
/// result is bitwise identical). Throws std::invalid_argument on an empty image or
/// non-finite values.
Normalization percentile_affine(const ImageView& image, const PercentileNormalization& p);

struct SegmenterOptions {
  std::int64_t tile_h = 256;  ///< model tile (multiple of the model's tile multiple)
  std::int64_t tile_w = 256;
  double overlap = 0.125;      ///< fractional overlap, MONAI grid (temseg.spec.DEFAULT_OVERLAP)
  WindowKind window = WindowKind::Gaussian;
  double sigma_scale = 0.125;
  std::int64_t batch_size = 4;  ///< tiles per backend call (capped by Backend::max_batch)
  PadMode pad = PadMode::Reflect;
  PercentileNormalization normalization{};
  bool fixed_affine = false;  ///< use `affine` instead of the percentile normalisation
  Normalization affine{};
  int num_threads = 0;  ///< extraction / blending threads (0: all cores)
};

/// Options from the flat `temseg.*` metadata of an export (temseg/export/metadata.py):
/// tile = temseg.roi_size (temseg.patch_size in exports without it), normalisation = temseg.norm.*; other fields from `base`.
/// Throws std::invalid_argument naming the key when a value is missing or malformed.
SegmenterOptions options_from_metadata(const std::map<std::string, std::string>& metadata,
                                       SegmenterOptions base = {});

/// Read a flat JSON object of strings ({"key": "value", ...}, as written beside TensorRT
/// engines and AOTI packages, `<file>.json`). Throws std::runtime_error naming the file and
/// the position of a syntax error.
std::map<std::string, std::string> read_metadata_json(const std::string& path);

/// Finished rows [row0, row1) of the label image: `labels` points at (row1 - row0, width)
/// uint8 rows (contiguous, valid during the call only); `probs` at (C, row1 - row0, width)
/// float32 when requested, else null.
using BandCallback = std::function<void(std::int64_t row0, std::int64_t row1,
                                        const std::uint8_t* labels, const float* probs)>;

/// Tiler + backend. Not thread-safe: one segment() at a time per Segmenter.
///
/// segment() follows temseg's Python tiler exactly: percentile normalisation, the MONAI
/// tile grid, reflect padding for images smaller than the tile, window-weighted blending of
/// per-tile probabilities in the band accumulator, argmax (first maximum wins). Memory is
/// one band of tile_h rows (accumulator) plus one tile row of tiles and scores.
class Segmenter {
 public:
  Segmenter(std::unique_ptr<Backend> backend, SegmenterOptions options);
  ~Segmenter();
  Segmenter(const Segmenter&) = delete;
  Segmenter& operator=(const Segmenter&) = delete;

  /// Stream an image through the model, calling `on_band` for finished rows in order.
  void segment(const ImageView& image, const BandCallback& on_band, bool want_probs = false);

  /// Labels into a caller buffer: (height, width) uint8, row stride `labels_stride`
  /// (elements, >= width). Optionally probabilities into `probs` (C, height, width).
  void segment(const ImageView& image, std::uint8_t* labels, std::int64_t labels_stride,
               float* probs = nullptr);

  /// Labels of a raw buffer as a new (height, width) vector. `row_stride` in elements
  /// (0: width).
  std::vector<std::uint8_t> segment(const std::uint8_t* data, std::int64_t height,
                                    std::int64_t width, std::int64_t row_stride = 0);
  std::vector<std::uint8_t> segment(const std::uint16_t* data, std::int64_t height,
                                    std::int64_t width, std::int64_t row_stride = 0);

  Backend& backend() { return *backend_; }
  const SegmenterOptions& options() const { return options_; }
  /// The (offset, scale) used by the last segment() call.
  Normalization last_affine() const { return last_affine_; }

 private:
  std::unique_ptr<Backend> backend_;
  SegmenterOptions options_;
  std::vector<float> window_;
  std::unique_ptr<ThreadPool> pool_;
  Normalization last_affine_{};
};

}  // namespace temseg
