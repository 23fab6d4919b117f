#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "temseg/band_accumulator.hpp"
#include "temseg/extract.hpp"
#include "temseg/grid.hpp"
#include "temseg/window.hpp"

using temseg::BandAccumulator;
using temseg::TileGrid;
using temseg::WindowKind;

namespace {

struct Result {
  std::vector<float> probs;          // (C, H, W)
  std::vector<std::uint8_t> labels;  // (H, W)
  std::int64_t max_capacity = 0;
  std::int64_t max_buffered = 0;
};

float pixel(std::int64_t y, std::int64_t x, std::int64_t c) {
  return static_cast<float>((y * 7 + x * 3 + c * 11) % 23) - 5.0f;
}

// Tiles of the "identity" predictor: class c of a tile is pixel(., ., c) with reflect padding.
Result run(std::int64_t H, std::int64_t W, std::int64_t th, std::int64_t tw, double overlap,
           WindowKind kind, std::int64_t C, int threads, bool streaming, std::int64_t batch = 3) {
  TileGrid grid(H, W, th, tw, overlap, overlap);
  std::vector<float> planes(static_cast<std::size_t>(C * H * W));
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t y = 0; y < H; ++y)
      for (std::int64_t x = 0; x < W; ++x) planes[static_cast<std::size_t>((c * H + y) * W + x)] = pixel(y, x, c);

  BandAccumulator acc(H, W, th, tw, C, temseg::make_window(th, tw, kind), threads);
  Result res;
  res.probs.assign(static_cast<std::size_t>(C * H * W), -1.0f);
  res.labels.assign(static_cast<std::size_t>(H * W), 255);
  auto release = [&](std::int64_t row) {
    const std::int64_t r0 = acc.released_row(), h = row - r0;
    std::vector<float> p(static_cast<std::size_t>(C * h * W));
    std::vector<std::uint8_t> l(static_cast<std::size_t>(h * W));
    CHECK(acc.finalize_until(row, p.data(), l.data()) == h);
    for (std::int64_t c = 0; c < C; ++c)
      std::copy_n(p.data() + c * h * W, h * W, res.probs.data() + (c * H + r0) * W);
    std::copy_n(l.data(), h * W, res.labels.data() + r0 * W);
  };
  const auto origins = grid.origins();
  for (std::int64_t k = 0; k < grid.n_rows(); ++k) {
    if (streaming) release(grid.final_row_after(k));
    for (std::int64_t j0 = 0; j0 < grid.n_cols(); j0 += batch) {
      const std::int64_t n = std::min(batch, grid.n_cols() - j0);
      const std::int64_t* o = origins.data() + 2 * (k * grid.n_cols() + j0);
      std::vector<float> tiles(static_cast<std::size_t>(n * C * th * tw));
      for (std::int64_t c = 0; c < C; ++c) {
        temseg::ImageView img{planes.data() + c * H * W, temseg::PixelType::F32, H, W, W};
        temseg::extract_tiles(img, o, n, th, tw, tiles.data() + c * th * tw, C * th * tw);
      }
      acc.add(tiles.data(), o, n);
      res.max_capacity = std::max(res.max_capacity, acc.capacity_rows());
      res.max_buffered = std::max(res.max_buffered, acc.buffered_rows());
    }
  }
  release(H);
  CHECK(acc.released_row() == H);
  return res;
}

void check_identity(const Result& r, std::int64_t H, std::int64_t W, std::int64_t C, float tol) {
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t y = 0; y < H; ++y)
      for (std::int64_t x = 0; x < W; ++x) {
        const float got = r.probs[static_cast<std::size_t>((c * H + y) * W + x)];
        const float want = pixel(y, x, c);
        if (std::fabs(got - want) > tol) {
          CAPTURE(c);
          CAPTURE(y);
          CAPTURE(x);
          CHECK(got == doctest::Approx(want));
          return;
        }
      }
  for (std::int64_t y = 0; y < H; ++y)
    for (std::int64_t x = 0; x < W; ++x) {
      std::int64_t best = 0;
      for (std::int64_t c = 1; c < C; ++c)
        if (r.probs[static_cast<std::size_t>((c * H + y) * W + x)] >
            r.probs[static_cast<std::size_t>((best * H + y) * W + x)])
          best = c;
      REQUIRE(r.labels[static_cast<std::size_t>(y * W + x)] == best);
    }
}

}  // namespace

TEST_CASE("accumulator: identity tiles reconstruct the input (all windows)") {
  for (WindowKind kind : {WindowKind::Constant, WindowKind::Gaussian, WindowKind::Cosine})
    for (double ov : {0.0, 0.25, 0.5}) {
      CAPTURE(static_cast<int>(kind));
      CAPTURE(ov);
      const auto r = run(45, 61, 16, 12, ov, kind, 3, 2, true);
      // Constant window + small integers: exact. Other windows: float rounding only.
      check_identity(r, 45, 61, 3, kind == WindowKind::Constant ? 0.0f : 2e-5f);
    }
}

TEST_CASE("accumulator: border cases 1xN, smaller than the tile, tile == image") {
  check_identity(run(1, 50, 1, 8, 0.25, WindowKind::Gaussian, 2, 2, true), 1, 50, 2, 2e-5f);
  check_identity(run(50, 1, 8, 1, 0.5, WindowKind::Cosine, 2, 1, true), 50, 1, 2, 2e-5f);
  check_identity(run(5, 9, 16, 16, 0.25, WindowKind::Gaussian, 2, 2, true), 5, 9, 2, 2e-5f);
  check_identity(run(1, 1, 4, 4, 0.25, WindowKind::Constant, 1, 1, true), 1, 1, 1, 0.0f);
  check_identity(run(16, 16, 16, 16, 0.25, WindowKind::Gaussian, 3, 2, false), 16, 16, 3, 2e-5f);
}

TEST_CASE("accumulator: streaming equals in-memory, 1 thread equals N threads") {
  const auto a = run(70, 33, 16, 16, 0.25, WindowKind::Gaussian, 4, 1, false, 5);
  const auto b = run(70, 33, 16, 16, 0.25, WindowKind::Gaussian, 4, 1, true, 2);
  const auto c = run(70, 33, 16, 16, 0.25, WindowKind::Gaussian, 4, 4, true, 3);
  const auto d = run(70, 33, 16, 16, 0.25, WindowKind::Gaussian, 4, 3, false, 1);
  CHECK(a.probs == b.probs);
  CHECK(a.probs == c.probs);
  CHECK(a.probs == d.probs);
  CHECK(a.labels == c.labels);
}

TEST_CASE("accumulator: band memory bounded while streaming a tall image") {
  const std::int64_t th = 32;
  const auto r = run(2000, 40, th, 16, 0.25, WindowKind::Cosine, 2, 2, true, 4);
  CHECK(r.max_capacity <= th);
  CHECK(r.max_buffered <= th);
  check_identity(r, 2000, 40, 2, 2e-5f);
}

TEST_CASE("accumulator: ordering contract and bad input") {
  BandAccumulator acc(100, 20, 10, 10, 2, temseg::make_window(10, 10, WindowKind::Constant), 2);
  std::vector<float> tile(2 * 10 * 10, 1.0f);
  const std::int64_t o0[] = {0, 0};
  acc.add(tile.data(), o0, 1);
  std::vector<float> p(2 * 5 * 20);
  CHECK(acc.finalize_until(5, p.data(), nullptr) == 5);
  CHECK(p[0] == 1.0f);
  CHECK(p[10] == 0.0f);  // column 10 never covered
  const std::int64_t back[] = {3, 0};  // touches released rows 3, 4
  CHECK_THROWS_AS(acc.add(tile.data(), back, 1), std::invalid_argument);
  const std::int64_t outside[] = {5, 20};
  CHECK_THROWS_AS(acc.add(tile.data(), outside, 1), std::invalid_argument);
  CHECK_THROWS_AS(acc.finalize_until(4, p.data(), nullptr), std::invalid_argument);
  CHECK_THROWS_AS(acc.finalize_until(101, p.data(), nullptr), std::invalid_argument);
  CHECK(acc.finalize_until(5, nullptr, nullptr) == 0);
  // A tile far below grows the ring instead of failing; released rows stay released.
  const std::int64_t far[] = {60, 0};
  acc.add(tile.data(), far, 1);
  CHECK(acc.capacity_rows() >= 65);
  std::vector<std::uint8_t> lab(95 * 20, 7);
  CHECK(acc.finalize_until(100, nullptr, lab.data()) == 95);
  CHECK(lab[0] == 0);
  CHECK_THROWS_AS(BandAccumulator(10, 10, 4, 4, 2, std::vector<float>(15, 1.0f)), std::invalid_argument);
  CHECK_THROWS_AS(BandAccumulator(10, 10, 4, 4, 2, std::vector<float>(16, 0.0f)), std::invalid_argument);
}
