#include <doctest/doctest.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "temseg/extract.hpp"

using temseg::ExtractOptions;
using temseg::ImageView;
using temseg::PadMode;
using temseg::PixelType;

TEST_CASE("extract: pad_index matches numpy.pad semantics") {
  // np.pad([0,1,2], 4, "reflect") -> 0 1 2 1 | 0 1 2 | 1 0 1 2
  const std::int64_t reflect[] = {0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2};
  // np.pad([0,1,2], 4, 'symmetric') -> 2 2 1 0 | 0 1 2 | 2 1 0 0
  const std::int64_t symmetric[] = {2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0};
  for (int i = -4; i < 7; ++i) {
    CHECK(temseg::pad_index(i, 3, PadMode::Reflect) == reflect[i + 4]);
    CHECK(temseg::pad_index(i, 3, PadMode::Symmetric) == symmetric[i + 4]);
  }
  CHECK(temseg::pad_index(-3, 1, PadMode::Reflect) == 0);  // 1-pixel axis repeats
  CHECK(temseg::pad_index(-2, 5, PadMode::Edge) == 0);
  CHECK(temseg::pad_index(9, 5, PadMode::Edge) == 4);
  CHECK(temseg::pad_index(9, 5, PadMode::Constant) == -1);
}

TEST_CASE("extract: uint8 with strided rows, normalisation and reflect padding") {
  // 3 x 4 image stored with row stride 6 (2 garbage columns per row).
  const std::vector<std::uint8_t> buf = {0, 1, 2,  3,  99, 99,  //
                                         4, 5, 6,  7,  99, 99,  //
                                         8, 9, 10, 11, 99, 99};
  ImageView img{buf.data(), PixelType::U8, 3, 4, 6};
  ExtractOptions opt;
  opt.norm = {1.0f, 0.5f};
  const std::int64_t origins[] = {-1, -2, 1, 1};
  std::vector<float> out(2 * 3 * 3, -1.0f);
  temseg::extract_tiles(img, origins, 2, 3, 3, out.data(), 9, opt);
  // Tile 0 rows -1..1 -> 1,0,1; cols -2..0 -> 2,1,0 (reflect)
  const float raw0[] = {6, 5, 4, 2, 1, 0, 6, 5, 4};
  // Tile 1 rows 1..3 -> 1,2,1; cols 1..3 -> 1,2,3
  const float raw1[] = {5, 6, 7, 9, 10, 11, 5, 6, 7};
  for (int i = 0; i < 9; ++i) {
    CHECK(out[static_cast<std::size_t>(i)] == (raw0[i] - 1.0f) * 0.5f);
    CHECK(out[static_cast<std::size_t>(9 + i)] == (raw1[i] - 1.0f) * 0.5f);
  }
}

TEST_CASE("extract: uint16 / float32, constant pad, channel stride, multi-threaded") {
  const std::vector<std::uint16_t> u16 = {100, 200, 300, 400};
  ImageView img{u16.data(), PixelType::U16, 2, 2, 2};
  ExtractOptions opt;
  opt.pad = PadMode::Constant;
  opt.cval = 10.0f;
  const std::int64_t origins[] = {0, 1};
  std::vector<float> out(2 * 4, -1.0f);  // (1, 2, 2, 2): write channel 1 only
  temseg::extract_tiles(img, origins, 1, 2, 2, out.data() + 4, 8, opt);
  CHECK(out[0] == -1.0f);
  CHECK(out[4] == 200.0f);
  CHECK(out[5] == 10.0f);
  CHECK(out[6] == 400.0f);
  CHECK(out[7] == 10.0f);

  std::vector<float> f(50 * 37);
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(i % 97) * 0.25f;
  ImageView fi{f.data(), PixelType::F32, 50, 37, 37};
  std::vector<std::int64_t> orig;
  for (int i = 0; i < 40; ++i) {
    orig.push_back(i * 3 - 20);
    orig.push_back(i * 2 - 15);
  }
  std::vector<float> a(40 * 16 * 16), b(40 * 16 * 16);
  temseg::extract_tiles(fi, orig.data(), 40, 16, 16, a.data(), 256, {});
  temseg::ThreadPool pool(3);
  temseg::extract_tiles(fi, orig.data(), 40, 16, 16, b.data(), 256, {}, &pool);
  CHECK(a == b);
  // tile 10 at (10, 5) lies inside: direct copy
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x)
      CHECK(a[static_cast<std::size_t>(10 * 256 + y * 16 + x)] ==
            f[static_cast<std::size_t>((10 + y) * 37 + 5 + x)]);
}

TEST_CASE("extract: bad arguments throw") {
  const std::vector<float> f(4, 0.0f);
  ImageView img{f.data(), PixelType::F32, 2, 2, 1};  // row_stride < width
  const std::int64_t origins[] = {0, 0};
  std::vector<float> out(4);
  CHECK_THROWS_AS(temseg::extract_tiles(img, origins, 1, 2, 2, out.data(), 4), std::invalid_argument);
  img.row_stride = 2;
  CHECK_THROWS_AS(temseg::extract_tiles(img, origins, 1, 2, 2, out.data(), 3), std::invalid_argument);
  CHECK_THROWS_AS(temseg::parse_pad_mode("wrap"), std::invalid_argument);
}
