#include "temseg/grid.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace temseg {
namespace {

void check_sizes(std::int64_t size, std::int64_t tile, const char* axis) {
  if (size <= 0) throw std::invalid_argument(std::string("slide ") + axis + " must be > 0");
  if (tile <= 0) throw std::invalid_argument(std::string("tile ") + axis + " must be > 0");
}

}  // namespace

std::int64_t scan_interval_fraction(std::int64_t padded, std::int64_t tile, double overlap) {
  if (!(overlap >= 0.0 && overlap < 1.0))
    throw std::invalid_argument("overlap must be in [0, 1), got " + std::to_string(overlap));
  if (padded == tile) return tile;
  // Same double arithmetic and truncation as Python's int(roi * (1 - o)).
  const auto interval = static_cast<std::int64_t>(static_cast<double>(tile) * (1.0 - overlap));
  return interval > 0 ? interval : 1;
}

std::int64_t scan_interval_pixels(std::int64_t padded, std::int64_t tile, std::int64_t overlap_px) {
  if (overlap_px < 0 || overlap_px >= tile)
    throw std::invalid_argument("overlap in pixels must be in [0, tile), got " +
                                std::to_string(overlap_px));
  if (padded == tile) return tile;
  return std::max<std::int64_t>(1, tile - overlap_px);
}

std::vector<std::int64_t> axis_starts(std::int64_t padded, std::int64_t tile, std::int64_t stride) {
  if (padded < tile) throw std::invalid_argument("axis_starts: extent smaller than tile");
  if (stride <= 0) throw std::invalid_argument("axis_starts: stride must be > 0");
  std::vector<std::int64_t> starts;
  // dense_patch_slices: first d with d * stride + tile >= padded ends the scan.
  for (std::int64_t d = 0;; ++d) {
    std::int64_t s = d * stride;
    const bool last = s + tile >= padded;
    if (last) s -= s + tile - padded;  // flush with the border
    starts.push_back(s);
    if (last) break;
  }
  return starts;
}

AxisGrid make_axis_grid(std::int64_t size, std::int64_t tile, std::int64_t stride) {
  AxisGrid g;
  g.size = size;
  g.tile = tile;
  g.stride = stride;
  const std::int64_t padded = std::max(size, tile);
  g.pad_before = (padded - size) / 2;
  g.starts = axis_starts(padded, tile, stride);
  for (auto& s : g.starts) s -= g.pad_before;
  return g;
}

TileGrid::TileGrid(AxisGrid rows, AxisGrid cols) : rows_(std::move(rows)), cols_(std::move(cols)) {}

TileGrid::TileGrid(std::int64_t height, std::int64_t width, std::int64_t tile_h, std::int64_t tile_w,
                   double overlap_h, double overlap_w) {
  check_sizes(height, tile_h, "height");
  check_sizes(width, tile_w, "width");
  rows_ = make_axis_grid(height, tile_h,
                         scan_interval_fraction(std::max(height, tile_h), tile_h, overlap_h));
  cols_ = make_axis_grid(width, tile_w,
                         scan_interval_fraction(std::max(width, tile_w), tile_w, overlap_w));
}

TileGrid TileGrid::from_pixels(std::int64_t height, std::int64_t width, std::int64_t tile_h,
                               std::int64_t tile_w, std::int64_t overlap_px_h,
                               std::int64_t overlap_px_w) {
  check_sizes(height, tile_h, "height");
  check_sizes(width, tile_w, "width");
  return TileGrid(
      make_axis_grid(height, tile_h,
                     scan_interval_pixels(std::max(height, tile_h), tile_h, overlap_px_h)),
      make_axis_grid(width, tile_w,
                     scan_interval_pixels(std::max(width, tile_w), tile_w, overlap_px_w)));
}

std::vector<std::int64_t> TileGrid::origins() const {
  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(2 * size()));
  for (auto y : rows_.starts)
    for (auto x : cols_.starts) {
      out.push_back(y);
      out.push_back(x);
    }
  return out;
}

std::int64_t TileGrid::final_row_after(std::int64_t tile_row) const {
  if (tile_row < 0 || tile_row > n_rows()) throw std::out_of_range("tile_row out of range");
  if (tile_row == n_rows()) return height();
  return std::clamp<std::int64_t>(rows_.starts[static_cast<std::size_t>(tile_row)], 0, height());
}

}  // namespace temseg
