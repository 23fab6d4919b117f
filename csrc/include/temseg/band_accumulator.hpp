// Streaming (band) accumulator for overlapping tile predictions.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "temseg/thread_pool.hpp"

namespace temseg {

/// Accumulates window-weighted class scores of overlapping tiles over a slide of
/// (height, width) pixels while keeping only a horizontal band of rows in memory.
///
/// For every pixel it keeps sum_t w_t * score_t[c] (C floats) and sum_t w_t (1 float), where
/// w is the blending window. finalize_until(row) turns rows [released_row(), row) into
/// probabilities sum / weight (and/or argmax labels) and frees them.
///
/// Storage is a ring buffer of rows starting at released_row(); it holds the rows touched
/// by tiles that were added but not yet finalized, so memory is
/// capacity_rows() * width * (n_classes + 1) * 4 bytes, independent of the slide height.
/// The ring starts with min(tile_h, height) rows and grows only if a tile would reach
/// further than capacity_rows() below released_row().
///
/// Ordering contract: add tiles by increasing tile row (TileGrid order) and call
/// finalize_until(grid.final_row_after(k)) once all tiles of tile rows [0, k) were added;
/// then capacity stays at tile_h rows. A tile that touches an already released row is
/// rejected with std::invalid_argument (nothing is accumulated from that add() call).
///
/// Tiles may extend beyond the slide (negative origins, e.g. for slides smaller than the
/// tile); the outside part is ignored. Pixels never covered get probability 0, label 0.
/// Public methods are serialised by an internal mutex; the heavy work inside add() and
/// finalize_until() is split by disjoint row ranges over the internal thread pool, so
/// every pixel sees its tiles in submission order and results do not depend on the
/// number of threads.
class BandAccumulator {
 public:
  /// `window` holds tile_h * tile_w positive weights (see make_window); num_threads <= 0
  /// means hardware concurrency, 1 means no worker threads.
  BandAccumulator(std::int64_t height, std::int64_t width, std::int64_t tile_h,
                  std::int64_t tile_w, std::int64_t n_classes, std::vector<float> window,
                  int num_threads = 0);
  ~BandAccumulator();
  BandAccumulator(const BandAccumulator&) = delete;
  BandAccumulator& operator=(const BandAccumulator&) = delete;

  /// tiles: contiguous float32 (n, n_classes, tile_h, tile_w); origins: n (y, x) pairs.
  void add(const float* tiles, const std::int64_t* origins, std::int64_t n);

  /// Finish rows [released_row(), row) and write them to `probs` (n_classes, h, width)
  /// and/or `labels` (h, width), h = row - released_row(); either may be null. Returns h.
  /// Requires released_row() <= row <= height. If expected_first_row >= 0 it must equal
  /// released_row() (guards callers that sized the outputs beforehand against races).
  std::int64_t finalize_until(std::int64_t row, float* probs, std::uint8_t* labels,
                              std::int64_t expected_first_row = -1);

  std::int64_t height() const { return height_; }
  std::int64_t width() const { return width_; }
  std::int64_t tile_h() const { return tile_h_; }
  std::int64_t tile_w() const { return tile_w_; }
  std::int64_t n_classes() const { return n_classes_; }
  int num_threads() const;
  std::int64_t released_row() const;
  /// One past the lowest row touched by any tile so far (>= released_row()).
  std::int64_t touched_row() const;
  /// Rows currently holding live (accumulated but unreleased) data.
  std::int64_t buffered_rows() const;
  /// Rows allocated in the ring buffer.
  std::int64_t capacity_rows() const;
  const std::vector<float>& window() const { return window_; }

 private:
  std::int64_t slot(std::int64_t row) const;  // ring slot of an unreleased row
  void ensure_capacity(std::int64_t rows);
  float* sums_row(std::int64_t row) { return sums_.data() + slot(row) * n_classes_ * width_; }
  float* weights_row(std::int64_t row) { return weights_.data() + slot(row) * width_; }

  std::int64_t height_, width_, tile_h_, tile_w_, n_classes_;
  std::vector<float> window_;
  std::unique_ptr<ThreadPool> pool_;  // null when single-threaded
  std::int64_t capacity_ = 0;         // rows in the ring
  std::int64_t head_ = 0;             // slot of released_row_
  std::int64_t released_ = 0;
  std::int64_t touched_ = 0;
  std::vector<float> sums_;     // capacity x n_classes x width
  std::vector<float> weights_;  // capacity x width
  mutable std::mutex mutex_;
};

}  // namespace temseg
