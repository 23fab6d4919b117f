#include "temseg/window.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace temseg {

WindowKind parse_window_kind(const std::string& name) {
  if (name == "constant") return WindowKind::Constant;
  if (name == "gaussian") return WindowKind::Gaussian;
  if (name == "cosine" || name == "hann") return WindowKind::Cosine;
  throw std::invalid_argument("unknown window mode '" + name +
                              "', expected 'constant', 'gaussian' or 'cosine'");
}

namespace {

// MONAI: x = arange(-(n-1)/2, (n-1)/2 + 1) in float32; exp(x**2 / (-2 * sigma**2)) in float32.
std::vector<float> gaussian_1d(std::int64_t n, double sigma_scale) {
  if (!(sigma_scale > 0.0)) throw std::invalid_argument("sigma_scale must be > 0");
  const double sigma = static_cast<double>(n) * sigma_scale;
  const auto denom = static_cast<float>(-2.0 * sigma * sigma);
  std::vector<float> w(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto x = static_cast<float>(static_cast<double>(i) - (static_cast<double>(n) - 1.0) / 2.0);
    w[static_cast<std::size_t>(i)] = std::exp((x * x) / denom);
  }
  return w;
}

std::vector<float> hann_1d(std::int64_t n) {
  const double pi = 3.14159265358979323846;
  std::vector<float> w(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    w[static_cast<std::size_t>(i)] = static_cast<float>(
        0.5 * (1.0 - std::cos(2.0 * pi * static_cast<double>(i + 1) / static_cast<double>(n + 1))));
  return w;
}

}  // namespace

std::vector<float> make_window(std::int64_t tile_h, std::int64_t tile_w, WindowKind kind,
                               double sigma_scale_h, double sigma_scale_w) {
  if (tile_h <= 0 || tile_w <= 0) throw std::invalid_argument("window size must be > 0");
  const auto size = static_cast<std::size_t>(tile_h * tile_w);
  if (kind == WindowKind::Constant) return std::vector<float>(size, 1.0f);

  const auto wy = kind == WindowKind::Gaussian ? gaussian_1d(tile_h, sigma_scale_h) : hann_1d(tile_h);
  const auto wx = kind == WindowKind::Gaussian ? gaussian_1d(tile_w, sigma_scale_w) : hann_1d(tile_w);
  std::vector<float> w(size);
  for (std::int64_t y = 0; y < tile_h; ++y)
    for (std::int64_t x = 0; x < tile_w; ++x)
      w[static_cast<std::size_t>(y * tile_w + x)] =
          wy[static_cast<std::size_t>(y)] * wx[static_cast<std::size_t>(x)];
  const float floor = std::max(*std::min_element(w.begin(), w.end()), kWindowFloor);
  for (auto& v : w) v = std::max(v, floor);
  return w;
}

}  // namespace temseg
