// Non-owning view of a single-channel 2-D image with an arbitrary row stride.
#pragma once

#include <cstdint>

namespace temseg {

enum class PixelType { U8, U16, F32 };

/// `data` points at pixel (0, 0); pixel (y, x) is at element y * row_stride + x
/// (row_stride counted in elements, >= width), so band buffers and strided views
/// (e.g. a crop of a larger array) can be read without copying.
struct ImageView {
  const void* data = nullptr;
  PixelType type = PixelType::F32;
  std::int64_t height = 0;
  std::int64_t width = 0;
  std::int64_t row_stride = 0;
};

}  // namespace temseg
