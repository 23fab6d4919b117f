#include "temseg/extract.hpp"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace temseg {

PadMode parse_pad_mode(const std::string& name) {
  if (name == "reflect") return PadMode::Reflect;
  if (name == "symmetric") return PadMode::Symmetric;
  if (name == "edge" || name == "replicate") return PadMode::Edge;
  if (name == "constant") return PadMode::Constant;
  throw std::invalid_argument("unknown pad mode '" + name +
                              "', expected 'reflect', 'symmetric', 'edge' or 'constant'");
}

std::int64_t pad_index(std::int64_t i, std::int64_t n, PadMode mode) {
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case PadMode::Constant:
      return -1;
    case PadMode::Edge:
      return i < 0 ? 0 : n - 1;
    case PadMode::Reflect: {
      if (n == 1) return 0;  // nothing to mirror: numpy repeats the pixel
      const std::int64_t period = 2 * (n - 1);
      std::int64_t m = i % period;
      if (m < 0) m += period;
      return m < n ? m : period - m;
    }
    case PadMode::Symmetric: {
      const std::int64_t period = 2 * n;
      std::int64_t m = i % period;
      if (m < 0) m += period;
      return m < n ? m : period - 1 - m;
    }
  }
  return -1;
}

namespace {

template <typename T>
void extract_typed(const ImageView& img, const std::int64_t* origins, std::int64_t begin,
                   std::int64_t end, std::int64_t th, std::int64_t tw, float* out,
                   std::int64_t tile_stride, const ExtractOptions& opt) {
  const T* base = static_cast<const T*>(img.data);
  const float offset = opt.norm.offset, scale = opt.norm.scale;
  const float pad_value = (opt.cval - offset) * scale;
  std::vector<std::int64_t> col_map(static_cast<std::size_t>(tw));
  for (std::int64_t t = begin; t < end; ++t) {
    const std::int64_t oy = origins[2 * t], ox = origins[2 * t + 1];
    float* dst_tile = out + t * tile_stride;
    // Columns [in_lo, in_hi) of the tile read the image directly; the rest are padded.
    const std::int64_t in_lo = std::clamp<std::int64_t>(-ox, 0, tw);
    const std::int64_t in_hi = std::clamp<std::int64_t>(img.width - ox, in_lo, tw);
    for (std::int64_t x = 0; x < tw; ++x)
      col_map[static_cast<std::size_t>(x)] = pad_index(ox + x, img.width, opt.pad);
    for (std::int64_t y = 0; y < th; ++y) {
      float* dst = dst_tile + y * tw;
      const std::int64_t iy = pad_index(oy + y, img.height, opt.pad);
      if (iy < 0) {
        std::fill(dst, dst + tw, pad_value);
        continue;
      }
      const T* src = base + iy * img.row_stride;
      for (std::int64_t x = 0; x < in_lo; ++x) {
        const std::int64_t ix = col_map[static_cast<std::size_t>(x)];
        dst[x] = ix < 0 ? pad_value : (static_cast<float>(src[ix]) - offset) * scale;
      }
      for (std::int64_t x = in_lo; x < in_hi; ++x)
        dst[x] = (static_cast<float>(src[ox + x]) - offset) * scale;
      for (std::int64_t x = in_hi; x < tw; ++x) {
        const std::int64_t ix = col_map[static_cast<std::size_t>(x)];
        dst[x] = ix < 0 ? pad_value : (static_cast<float>(src[ix]) - offset) * scale;
      }
    }
  }
}

}  // namespace

void extract_tiles(const ImageView& image, const std::int64_t* origins, std::int64_t n,
                   std::int64_t tile_h, std::int64_t tile_w, float* out,
                   std::int64_t tile_stride, const ExtractOptions& options, ThreadPool* pool) {
  if (n < 0) throw std::invalid_argument("extract_tiles: negative tile count");
  if (n == 0) return;
  if (tile_h <= 0 || tile_w <= 0) throw std::invalid_argument("extract_tiles: tile size must be > 0");
  if (image.height <= 0 || image.width <= 0) throw std::invalid_argument("extract_tiles: empty image");
  if (image.row_stride < image.width)
    throw std::invalid_argument("extract_tiles: row_stride must be >= width");
  if (!image.data || !origins || !out) throw std::invalid_argument("extract_tiles: null pointer");
  if (tile_stride < tile_h * tile_w)
    throw std::invalid_argument("extract_tiles: tile_stride must be >= tile_h * tile_w");

  auto work = [&](std::int64_t lo, std::int64_t hi) {
    switch (image.type) {
      case PixelType::U8:
        extract_typed<std::uint8_t>(image, origins, lo, hi, tile_h, tile_w, out, tile_stride, options);
        break;
      case PixelType::U16:
        extract_typed<std::uint16_t>(image, origins, lo, hi, tile_h, tile_w, out, tile_stride, options);
        break;
      case PixelType::F32:
        extract_typed<float>(image, origins, lo, hi, tile_h, tile_w, out, tile_stride, options);
        break;
    }
  };
  parallel_for(pool, 0, n, work);
}

}  // namespace temseg
