#include "temseg/band_accumulator.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace temseg {

namespace {
constexpr std::int64_t kMinRowsPerTask = 4;
constexpr float kInf = std::numeric_limits<float>::infinity();
}  // namespace

BandAccumulator::BandAccumulator(std::int64_t height, std::int64_t width, std::int64_t tile_h,
                                 std::int64_t tile_w, std::int64_t n_classes,
                                 std::vector<float> window, int num_threads)
    : height_(height),
      width_(width),
      tile_h_(tile_h),
      tile_w_(tile_w),
      n_classes_(n_classes),
      window_(std::move(window)) {
  if (height <= 0 || width <= 0) throw std::invalid_argument("slide height and width must be > 0");
  if (tile_h <= 0 || tile_w <= 0) throw std::invalid_argument("tile size must be > 0");
  if (n_classes <= 0) throw std::invalid_argument("n_classes must be > 0");
  if (static_cast<std::int64_t>(window_.size()) != tile_h * tile_w)
    throw std::invalid_argument("window must have tile_h * tile_w = " +
                                std::to_string(tile_h * tile_w) + " weights, got " +
                                std::to_string(window_.size()));
  for (float w : window_)
    if (!(w > 0.0f)) throw std::invalid_argument("window weights must be > 0 and finite");
  if (resolve_num_threads(num_threads) > 1) pool_ = std::make_unique<ThreadPool>(num_threads);
  ensure_capacity(std::min(tile_h, height));
}

BandAccumulator::~BandAccumulator() = default;

int BandAccumulator::num_threads() const { return pool_ ? pool_->num_threads() : 1; }

std::int64_t BandAccumulator::released_row() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return released_;
}

std::int64_t BandAccumulator::touched_row() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return touched_;
}

std::int64_t BandAccumulator::buffered_rows() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return touched_ - released_;
}

std::int64_t BandAccumulator::capacity_rows() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return capacity_;
}

std::int64_t BandAccumulator::slot(std::int64_t row) const {
  const std::int64_t s = head_ + (row - released_);
  return s >= capacity_ ? s - capacity_ : s;
}

void BandAccumulator::ensure_capacity(std::int64_t rows) {
  if (rows <= capacity_) return;
  const std::int64_t new_cap = std::max(rows, capacity_ + capacity_ / 2);
  const std::int64_t cw = n_classes_ * width_;
  std::vector<float> sums(static_cast<std::size_t>(new_cap * cw), 0.0f);
  std::vector<float> weights(static_cast<std::size_t>(new_cap * width_), 0.0f);
  // Re-linearise the live rows so that released_ sits at slot 0.
  for (std::int64_t r = released_; r < touched_; ++r) {
    const std::int64_t s = slot(r), d = r - released_;
    std::copy_n(sums_.data() + s * cw, cw, sums.data() + d * cw);
    std::copy_n(weights_.data() + s * width_, width_, weights.data() + d * width_);
  }
  sums_.swap(sums);
  weights_.swap(weights);
  capacity_ = new_cap;
  head_ = 0;
}

void BandAccumulator::add(const float* tiles, const std::int64_t* origins, std::int64_t n) {
  if (n < 0) throw std::invalid_argument("add: negative tile count");
  if (n == 0) return;
  if (!tiles || !origins) throw std::invalid_argument("add: null pointer");
  std::lock_guard<std::mutex> lock(mutex_);

  // Validate everything before touching the buffer.
  std::int64_t lo = height_, hi = 0;
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t y = origins[2 * t], x = origins[2 * t + 1];
    const std::int64_t y0 = std::max<std::int64_t>(y, 0), y1 = std::min(y + tile_h_, height_);
    const std::int64_t x0 = std::max<std::int64_t>(x, 0), x1 = std::min(x + tile_w_, width_);
    if (y0 >= y1 || x0 >= x1)
      throw std::invalid_argument("add: tile " + std::to_string(t) + " at (" + std::to_string(y) +
                                  ", " + std::to_string(x) + ") lies outside the slide");
    if (y0 < released_)
      throw std::invalid_argument("add: tile " + std::to_string(t) + " at row " + std::to_string(y) +
                                  " touches row " + std::to_string(y0) +
                                  " which was already released (released_row = " +
                                  std::to_string(released_) +
                                  "); add tiles in grid order by tile row");
    lo = std::min(lo, y0);
    hi = std::max(hi, y1);
  }
  ensure_capacity(hi - released_);
  touched_ = std::max(touched_, hi);

  const std::int64_t tile_size = tile_h_ * tile_w_;
  // Each task owns a disjoint range of slide rows and walks all tiles in order: no two
  // threads write the same pixel and per-pixel summation order is the submission order.
  auto work = [&](std::int64_t r_lo, std::int64_t r_hi) {
    // Row-outer order keeps one accumulator row (n_classes + 1 floats per pixel) in cache
    // while every tile crossing it is added.
    for (std::int64_t r = r_lo; r < r_hi; ++r) {
      float* __restrict wrow = weights_row(r);
      float* __restrict srow = sums_row(r);
      for (std::int64_t t = 0; t < n; ++t) {
        const std::int64_t y = origins[2 * t], x = origins[2 * t + 1];
        const std::int64_t ty = r - y;
        if (ty < 0 || ty >= tile_h_) continue;
        const std::int64_t tx0 = std::max<std::int64_t>(0, -x);
        const std::int64_t len = std::min(tile_w_, width_ - x) - tx0;
        const float* __restrict w = window_.data() + ty * tile_w_ + tx0;
        const float* tile = tiles + t * n_classes_ * tile_size + ty * tile_w_ + tx0;
        float* __restrict wdst = wrow + x + tx0;
        for (std::int64_t i = 0; i < len; ++i) wdst[i] += w[i];
        for (std::int64_t c = 0; c < n_classes_; ++c) {
          const float* __restrict src = tile + c * tile_size;
          float* __restrict dst = srow + c * width_ + x + tx0;
          for (std::int64_t i = 0; i < len; ++i) dst[i] += src[i] * w[i];
        }
      }
    }
  };
  parallel_for(pool_.get(), lo, hi, work, kMinRowsPerTask);
}

std::int64_t BandAccumulator::finalize_until(std::int64_t row, float* probs, std::uint8_t* labels,
                                             std::int64_t expected_first_row) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (expected_first_row >= 0 && expected_first_row != released_)
    throw std::invalid_argument("finalize_until: released_row changed concurrently (expected " +
                                std::to_string(expected_first_row) + ", is " +
                                std::to_string(released_) + ")");
  if (row < released_ || row > height_)
    throw std::invalid_argument("finalize_until: row " + std::to_string(row) + " outside [" +
                                std::to_string(released_) + ", " + std::to_string(height_) + "]");
  if (labels && n_classes_ > 256)
    throw std::invalid_argument("finalize_until: uint8 labels need n_classes <= 256");
  const std::int64_t h = row - released_;
  if (h == 0) return 0;

  const std::int64_t base = released_;
  const std::int64_t live_end = std::min(row, touched_);  // rows [live_end, row) were never touched
  auto work = [&](std::int64_t r_lo, std::int64_t r_hi) {
    const auto W = static_cast<std::size_t>(width_);
    std::vector<float> den(W), tmp(W), best(labels ? W : 0);
    std::vector<std::int32_t> arg(labels ? W : 0);
    for (std::int64_t r = r_lo; r < r_hi; ++r) {
      const std::int64_t i = r - base;
      std::uint8_t* lab = labels ? labels + i * width_ : nullptr;
      if (r >= live_end) {
        if (probs)
          for (std::int64_t c = 0; c < n_classes_; ++c)
            std::fill_n(probs + (c * h + i) * width_, width_, 0.0f);
        if (lab) std::fill_n(lab, width_, std::uint8_t{0});
        continue;
      }
      float* srow = sums_row(r);
      float* wrow = weights_row(r);
      // Branch-free (vectorisable) loops: never-covered pixels have sum 0 and weight 0;
      // dividing by +inf maps them to 0.
      for (std::size_t x = 0; x < W; ++x) den[x] = wrow[x] > 0.0f ? wrow[x] : kInf;
      for (std::int64_t c = 0; c < n_classes_; ++c) {
        float* p = probs ? probs + (c * h + i) * width_ : tmp.data();
        const float* s = srow + c * width_;
        for (std::size_t x = 0; x < W; ++x) p[x] = s[x] / den[x];
        if (!lab) continue;
        if (c == 0) {
          std::copy_n(p, W, best.data());
          std::fill(arg.begin(), arg.end(), 0);
          continue;
        }
        const auto cc = static_cast<std::int32_t>(c);
        float* __restrict bst = best.data();
        std::int32_t* __restrict am = arg.data();
        const float* __restrict pv = p;
        for (std::size_t x = 0; x < W; ++x) {
          // Strictly greater: the first maximum wins, like numpy/torch argmax. Written with
          // masks (no branches) so that it vectorises.
          const std::int32_t gt = -static_cast<std::int32_t>(pv[x] > bst[x]);
          am[x] = (am[x] & ~gt) | (cc & gt);
          bst[x] = pv[x] > bst[x] ? pv[x] : bst[x];
        }
      }
      if (lab)
        for (std::size_t x = 0; x < W; ++x) lab[x] = static_cast<std::uint8_t>(arg[x]);
      std::fill_n(srow, n_classes_ * width_, 0.0f);  // recycle the slot
      std::fill_n(wrow, width_, 0.0f);
    }
  };
  parallel_for(pool_.get(), base, row, work, kMinRowsPerTask);

  head_ = (row <= touched_) ? (head_ + h) % capacity_ : 0;
  released_ = row;
  touched_ = std::max(touched_, released_);
  return h;
}

}  // namespace temseg
