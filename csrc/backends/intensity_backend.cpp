// Trivial CPU backend (see IntensityBackend in temseg/segmenter.hpp).
#include <stdexcept>
#include <string>

#include "temseg/segmenter.hpp"

namespace temseg {

IntensityBackend::IntensityBackend(std::int64_t num_classes, std::int64_t max_batch)
    : num_classes_(num_classes), max_batch_(max_batch) {
  if (num_classes < 2) throw std::invalid_argument("IntensityBackend: needs >= 2 classes");
}

void IntensityBackend::predict(const float* tiles, std::int64_t n, std::int64_t tile_h,
                               std::int64_t tile_w, float* scores) {
  if (max_batch_ > 0 && n > max_batch_)
    throw std::invalid_argument("IntensityBackend: batch " + std::to_string(n) +
                                " exceeds max_batch " + std::to_string(max_batch_));
  ++calls_;
  tiles_seen_ += n;
  const std::int64_t hw = tile_h * tile_w, C = num_classes_;
  for (std::int64_t c = 0; c < C; ++c) {
    // mu_c = -1 + 2c / (C - 1), in float32 (numpy: np.float32(-1) + np.float32(2 * c) / (C - 1))
    const float mu = -1.0f + static_cast<float>(2 * c) / static_cast<float>(C - 1);
    for (std::int64_t i = 0; i < n; ++i) {
      const float* x = tiles + i * hw;
      float* s = scores + (i * C + c) * hw;
      for (std::int64_t p = 0; p < hw; ++p) {
        const float d = x[p] - mu;
        const float dd = d * d;
        s[p] = 1.0f / (1.0f + dd);
      }
    }
  }
}

}  // namespace temseg
