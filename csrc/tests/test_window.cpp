#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "temseg/window.hpp"

using temseg::make_window;
using temseg::WindowKind;

TEST_CASE("window: constant is all ones") {
  auto w = make_window(3, 5, WindowKind::Constant);
  CHECK(w.size() == 15);
  for (float v : w) CHECK(v == 1.0f);
}

TEST_CASE("window: gaussian matches MONAI formula, hand-checked") {
  // n = 4, sigma = 0.5: x = -1.5, -0.5, 0.5, 1.5; g = exp(-x^2 / 0.5)
  auto w = make_window(1, 4, WindowKind::Gaussian, 0.125, 0.125);
  const double g1 = std::exp(-2.25 / 0.5), g0 = std::exp(-0.25 / 0.5);
  // 1-row axis: sigma = 0.125, x = 0 -> 1
  CHECK(w[0] == doctest::Approx(g1).epsilon(1e-6));
  CHECK(w[1] == doctest::Approx(g0).epsilon(1e-6));
  CHECK(w[2] == doctest::Approx(g0).epsilon(1e-6));
  CHECK(w[3] == doctest::Approx(g1).epsilon(1e-6));
  // floor: for a large tile the corners are clamped to 1e-3
  auto big = make_window(64, 64, WindowKind::Gaussian);
  CHECK(*std::min_element(big.begin(), big.end()) == doctest::Approx(1e-3f));
  CHECK(*std::max_element(big.begin(), big.end()) <= 1.0f);
  // symmetric
  CHECK(big[0] == big[63]);
  CHECK(big[5 * 64 + 7] == big[7 * 64 + 5]);
}

TEST_CASE("window: cosine is positive, symmetric, peaks in the middle") {
  auto w = make_window(7, 6, WindowKind::Cosine);
  for (float v : w) CHECK(v > 0.0f);
  CHECK(w[3 * 6 + 2] == doctest::Approx(w[3 * 6 + 3]));
  CHECK(w[3 * 6 + 2] > w[0]);
  CHECK(w[0] == w[6 * 6 + 5]);
  auto one = make_window(1, 1, WindowKind::Cosine);
  CHECK(one[0] == doctest::Approx(1.0f));
}

TEST_CASE("window: bad arguments") {
  CHECK_THROWS_AS(make_window(0, 4, WindowKind::Constant), std::invalid_argument);
  CHECK_THROWS_AS(make_window(4, 4, WindowKind::Gaussian, 0.0, 0.1), std::invalid_argument);
  CHECK_THROWS_AS(temseg::parse_window_kind("box"), std::invalid_argument);
  CHECK(temseg::parse_window_kind("hann") == WindowKind::Cosine);
}
