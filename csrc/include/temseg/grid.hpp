// Tile grid: origins of fixed-size tiles covering a 2-D slide (MONAI compatible).
#pragma once

#include <cstdint>
#include <vector>

namespace temseg {

/// One axis of a tile grid. Mirrors monai.inferers.utils._get_scan_interval and
/// monai.data.utils.dense_patch_slices for a single spatial dimension.
struct AxisGrid {
  std::int64_t size = 0;       ///< slide extent along this axis (pixels)
  std::int64_t tile = 0;       ///< tile extent along this axis
  std::int64_t stride = 0;     ///< scan interval between consecutive tiles
  std::int64_t pad_before = 0; ///< (max(size, tile) - size) / 2: MONAI's leading pad
  std::vector<std::int64_t> starts;  ///< tile origins in slide coordinates (may be < 0
                                     ///< when size < tile, see pad_before)
};

/// MONAI scan interval from a fractional overlap in [0, 1):
/// padded == tile ? tile : max(1, int(tile * (1 - overlap))).
/// `padded` is max(size, tile) (the size MONAI sees after padding).
std::int64_t scan_interval_fraction(std::int64_t padded, std::int64_t tile, double overlap);

/// Scan interval from an overlap in pixels in [0, tile): max(1, tile - overlap_px),
/// or `tile` when padded == tile.
std::int64_t scan_interval_pixels(std::int64_t padded, std::int64_t tile, std::int64_t overlap_px);

/// Origins along one axis for an extent `padded` >= tile (dense_patch_slices): starts
/// i * stride for i = 0.. until the first tile that reaches the border; that last
/// tile is shifted to be flush with the border. The result is strictly increasing
/// (no duplicates).
std::vector<std::int64_t> axis_starts(std::int64_t padded, std::int64_t tile, std::int64_t stride);

/// Build one axis. If size < tile the slide is (conceptually) padded to `tile` as MONAI
/// does (pad_before = (tile - size) / 2) and the single origin is -pad_before.
AxisGrid make_axis_grid(std::int64_t size, std::int64_t tile, std::int64_t stride);

/// A 2-D grid of tile origins. Order is row-major by tile row (all tiles with the
/// smallest y first, x increasing), which is MONAI's order and the order
/// BandAccumulator expects.
class TileGrid {
 public:
  /// Fractional overlap per axis, each in [0, 1).
  TileGrid(std::int64_t height, std::int64_t width, std::int64_t tile_h, std::int64_t tile_w,
           double overlap_h, double overlap_w);
  /// Overlap in pixels per axis, each in [0, tile).
  static TileGrid from_pixels(std::int64_t height, std::int64_t width, std::int64_t tile_h,
                              std::int64_t tile_w, std::int64_t overlap_px_h,
                              std::int64_t overlap_px_w);

  const AxisGrid& rows() const { return rows_; }
  const AxisGrid& cols() const { return cols_; }
  std::int64_t height() const { return rows_.size; }
  std::int64_t width() const { return cols_.size; }
  std::int64_t tile_h() const { return rows_.tile; }
  std::int64_t tile_w() const { return cols_.tile; }
  std::int64_t n_rows() const { return static_cast<std::int64_t>(rows_.starts.size()); }
  std::int64_t n_cols() const { return static_cast<std::int64_t>(cols_.starts.size()); }
  std::int64_t size() const { return n_rows() * n_cols(); }

  /// Origins as interleaved (y, x) pairs, length 2 * size(), row-major.
  std::vector<std::int64_t> origins() const;

  /// First slide row that no tile of tile-row index >= `tile_row` touches from below,
  /// i.e. the row up to which results are final once tile rows [0, tile_row) have
  /// been accumulated: starts[tile_row] (clamped to [0, height]) or height when
  /// tile_row == n_rows().
  std::int64_t final_row_after(std::int64_t tile_row) const;

 private:
  TileGrid(AxisGrid rows, AxisGrid cols);
  AxisGrid rows_;
  AxisGrid cols_;
};

}  // namespace temseg
