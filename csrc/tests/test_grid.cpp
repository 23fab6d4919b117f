#include <doctest/doctest.h>

#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

#include "temseg/grid.hpp"

using temseg::TileGrid;

namespace {

// Every pixel of [0, size) covered by [s, s + tile) for some s, origins strictly increasing.
void check_axis(const temseg::AxisGrid& g) {
  REQUIRE(!g.starts.empty());
  for (std::size_t i = 1; i < g.starts.size(); ++i) CHECK(g.starts[i] > g.starts[i - 1]);
  std::vector<int> cover(static_cast<std::size_t>(g.size), 0);
  for (auto s : g.starts)
    for (auto p = s; p < s + g.tile; ++p)
      if (p >= 0 && p < g.size) cover[static_cast<std::size_t>(p)]++;
  for (int c : cover) CHECK(c > 0);
  if (g.size >= g.tile) {
    CHECK(g.starts.front() == 0);
    CHECK(g.starts.back() + g.tile == g.size);  // last tile flush with the border
  } else {
    CHECK(g.starts.size() == 1);
    CHECK(g.starts.front() == -g.pad_before);
  }
}

}  // namespace

TEST_CASE("grid: MONAI scan interval, hand-checked") {
  // int(256 * 0.75) = 192; int(10 * 0.75) = 7; int(3 * 0.5) = 1; int(1 * 0.5) = 0 -> 1
  CHECK(temseg::scan_interval_fraction(1000, 256, 0.25) == 192);
  CHECK(temseg::scan_interval_fraction(100, 10, 0.25) == 7);
  CHECK(temseg::scan_interval_fraction(100, 3, 0.5) == 1);
  CHECK(temseg::scan_interval_fraction(100, 1, 0.5) == 1);
  CHECK(temseg::scan_interval_fraction(64, 64, 0.5) == 64);  // roi == image: interval = roi
  CHECK(temseg::scan_interval_pixels(1000, 256, 64) == 192);
  CHECK_THROWS_AS(temseg::scan_interval_fraction(100, 10, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(temseg::scan_interval_fraction(100, 10, -0.1), std::invalid_argument);
  CHECK_THROWS_AS(temseg::scan_interval_pixels(100, 10, 10), std::invalid_argument);
}

TEST_CASE("grid: hand-checked origins (dense_patch_slices)") {
  // size 10, tile 4, stride 3: 0,3,6 (6+4 = 10 flush)
  CHECK(temseg::axis_starts(10, 4, 3) == std::vector<std::int64_t>{0, 3, 6});
  // size 11, tile 4, stride 3: 0,3,6,9->7 (last shifted flush)
  CHECK(temseg::axis_starts(11, 4, 3) == std::vector<std::int64_t>{0, 3, 6, 7});
  // size 1000, tile 256, overlap .25: 0,192,384,576,744
  CHECK(temseg::axis_starts(1000, 256, 192) == std::vector<std::int64_t>{0, 192, 384, 576, 744});
  // tile == image
  CHECK(temseg::axis_starts(64, 64, 64) == std::vector<std::int64_t>{0});
  // stride 1
  CHECK(temseg::axis_starts(5, 3, 1) == std::vector<std::int64_t>{0, 1, 2});
}

TEST_CASE("grid: coverage, flush last tile, no duplicates over many shapes") {
  for (std::int64_t size : {1, 2, 5, 31, 64, 65, 100, 257, 1000})
    for (std::int64_t tile : {1, 3, 16, 64, 256})
      for (double ov : {0.0, 0.25, 0.5, 0.75, 0.9}) {
        CAPTURE(size);
        CAPTURE(tile);
        CAPTURE(ov);
        TileGrid g(size, 7, tile, 3, ov, ov);
        check_axis(g.rows());
        check_axis(g.cols());
        auto o = g.origins();
        CHECK(o.size() == static_cast<std::size_t>(2 * g.size()));
        std::set<std::pair<std::int64_t, std::int64_t>> uniq;
        for (std::size_t i = 0; i < o.size(); i += 2) uniq.insert({o[i], o[i + 1]});
        CHECK(uniq.size() == static_cast<std::size_t>(g.size()));
      }
}

TEST_CASE("grid: row-major order and final rows") {
  TileGrid g(10, 11, 4, 4, 0.25, 0.25);  // stride 3 both axes
  auto o = g.origins();
  REQUIRE(g.n_rows() == 3);
  REQUIRE(g.n_cols() == 4);
  CHECK(o[0] == 0);
  CHECK(o[1] == 0);
  CHECK(o[2] == 0);
  CHECK(o[3] == 3);
  CHECK(o[8] == 3);  // second tile row starts after n_cols tiles
  CHECK(g.final_row_after(0) == 0);
  CHECK(g.final_row_after(1) == 3);
  CHECK(g.final_row_after(3) == 10);
}

TEST_CASE("grid: border cases 1xN, smaller than tile, tile == image") {
  TileGrid a(1, 100, 1, 16, 0.25, 0.25);
  CHECK(a.n_rows() == 1);
  CHECK(a.rows().starts[0] == 0);
  check_axis(a.cols());

  TileGrid b(5, 9, 16, 16, 0.25, 0.25);  // smaller than the tile: one padded tile
  CHECK(b.size() == 1);
  CHECK(b.rows().pad_before == 5);   // (16 - 5) / 2
  CHECK(b.cols().pad_before == 3);   // (16 - 9) / 2
  CHECK(b.rows().starts[0] == -5);
  CHECK(b.cols().starts[0] == -3);

  TileGrid c(64, 64, 64, 64, 0.5, 0.5);
  CHECK(c.size() == 1);
  CHECK(c.origins() == std::vector<std::int64_t>{0, 0});

  CHECK_THROWS_AS(TileGrid(0, 5, 4, 4, 0.25, 0.25), std::invalid_argument);
  CHECK_THROWS_AS(TileGrid(5, 5, 0, 4, 0.25, 0.25), std::invalid_argument);
}
