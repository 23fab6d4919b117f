// Blending windows (importance maps) for overlapping tiles.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace temseg {

enum class WindowKind { Constant, Gaussian, Cosine };

/// Parse "constant" | "gaussian" | "cosine" (alias "hann"); throws std::invalid_argument.
WindowKind parse_window_kind(const std::string& name);

/// Smallest weight any window may contain (MONAI's floor in compute_importance_map).
constexpr float kWindowFloor = 1e-3f;

/// Row-major (tile_h, tile_w) float32 weights, all > 0.
///  - Constant: ones.
///  - Gaussian: monai.data.utils.compute_importance_map(mode="gaussian") in float32:
///    separable exp(-x^2 / (2 sigma^2)) with x = i - (n - 1) / 2 and sigma = sigma_scale * n
///    per axis (no renormalisation: the max is 1 only for odd sizes), then clamped from
///    below at max(min(map), 1e-3).
///  - Cosine: separable Hann 0.5 * (1 - cos(2 pi (i + 1) / (n + 1))), i.e. the Hann window
///    of length n + 2 without its zero end points, then the same floor as Gaussian.
std::vector<float> make_window(std::int64_t tile_h, std::int64_t tile_w, WindowKind kind,
                               double sigma_scale_h = 0.125, double sigma_scale_w = 0.125);

}  // namespace temseg
