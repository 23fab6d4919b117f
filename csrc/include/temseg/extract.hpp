// Tile extraction: read tiles from an image into a contiguous float32 batch buffer.
#pragma once

#include <cstdint>
#include <string>

#include "temseg/image_view.hpp"
#include "temseg/thread_pool.hpp"

namespace temseg {

/// How pixels outside the image are produced (numpy.pad mode names).
///  - Reflect: mirror without repeating the edge (d c b | a b c d | c b a); periodic for
///    pads longer than the image, like numpy; a 1-pixel axis repeats its pixel.
///  - Symmetric: mirror repeating the edge (b a | a b c d | d c).
///  - Edge: repeat the border pixel.
///  - Constant: the value `cval` (in raw image units, normalised like any pixel).
enum class PadMode { Reflect, Symmetric, Edge, Constant };

/// Parse "reflect" | "symmetric" | "edge" (alias "replicate") | "constant".
PadMode parse_pad_mode(const std::string& name);

/// Map a possibly out-of-range coordinate into [0, n) for Reflect/Symmetric/Edge
/// (Constant: returns -1 when out of range).
std::int64_t pad_index(std::int64_t i, std::int64_t n, PadMode mode);

/// out = (x - offset) * scale, computed in float32.
struct Normalization {
  float offset = 0.0f;
  float scale = 1.0f;
};

struct ExtractOptions {
  Normalization norm{};
  PadMode pad = PadMode::Reflect;
  float cval = 0.0f;
};

/// Extract `n` tiles of size (tile_h, tile_w) with top-left corners origins[2i], origins[2i+1]
/// (y, x; may lie partly or fully outside the image) into `out`.
/// Tile i is written to out + i * tile_stride as a row-major tile_h x tile_w block, so
/// tile_stride = tile_h * tile_w gives an (n, 1, th, tw) batch and
/// tile_stride = C * tile_h * tile_w with out offset c * th * tw fills channel c of an
/// (n, C, th, tw) batch. Tiles are processed in parallel on `pool` (may be null).
void extract_tiles(const ImageView& image, const std::int64_t* origins, std::int64_t n,
                   std::int64_t tile_h, std::int64_t tile_w, float* out,
                   std::int64_t tile_stride, const ExtractOptions& options = {},
                   ThreadPool* pool = nullptr);

}  // namespace temseg
