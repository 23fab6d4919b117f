#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "temseg/grid.hpp"
#include "temseg/segmenter.hpp"
#include "temseg/window.hpp"

using temseg::ImageView;
using temseg::IntensityBackend;
using temseg::PixelType;
using temseg::Segmenter;
using temseg::SegmenterOptions;

namespace {

std::vector<std::uint8_t> random_image(std::int64_t h, std::int64_t w, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, 255);
  std::vector<std::uint8_t> img(static_cast<std::size_t>(h * w));
  // Smooth blobs + noise so that several classes occur and labels have structure.
  for (std::int64_t y = 0; y < h; ++y)
    for (std::int64_t x = 0; x < w; ++x) {
      const double v = 128 + 90 * std::sin(0.07 * static_cast<double>(x)) *
                                 std::cos(0.05 * static_cast<double>(y)) +
                       0.15 * (d(rng) - 128);
      img[static_cast<std::size_t>(y * w + x)] =
          static_cast<std::uint8_t>(std::clamp(v, 0.0, 255.0));
    }
  return img;
}

struct Output {
  std::vector<std::uint8_t> labels;
  std::vector<float> probs;
};

Output run(const ImageView& view, SegmenterOptions opt, std::int64_t C = 5,
           std::int64_t max_batch = 0) {
  Segmenter seg(std::make_unique<IntensityBackend>(C, max_batch), opt);
  Output out;
  out.labels.assign(static_cast<std::size_t>(view.height * view.width), 255);
  out.probs.assign(static_cast<std::size_t>(C * view.height * view.width), -1.0f);
  seg.segment(view, out.labels.data(), view.width, out.probs.data());
  return out;
}

float intensity_score(float x, std::int64_t c, std::int64_t C) {
  const float mu = -1.0f + static_cast<float>(2 * c) / static_cast<float>(C - 1);
  const float d = x - mu;
  return 1.0f / (1.0f + d * d);
}

// Brute force: every pixel = sum over covering tiles of w * score / sum of w (image >= tile).
std::vector<double> reference_probs(const std::vector<std::uint8_t>& img, std::int64_t H,
                                    std::int64_t W, const SegmenterOptions& opt,
                                    temseg::Normalization norm, std::int64_t C) {
  temseg::TileGrid grid(H, W, opt.tile_h, opt.tile_w, opt.overlap, opt.overlap);
  const auto win = temseg::make_window(opt.tile_h, opt.tile_w, opt.window, opt.sigma_scale,
                                       opt.sigma_scale);
  std::vector<double> sum(static_cast<std::size_t>(C * H * W), 0.0), wsum(H * W, 0.0);
  const auto o = grid.origins();
  for (std::int64_t t = 0; t < grid.size(); ++t) {
    const std::int64_t oy = o[2 * t], ox = o[2 * t + 1];
    for (std::int64_t y = std::max<std::int64_t>(oy, 0); y < std::min(oy + opt.tile_h, H); ++y)
      for (std::int64_t x = std::max<std::int64_t>(ox, 0); x < std::min(ox + opt.tile_w, W);
           ++x) {
        const double w = win[static_cast<std::size_t>((y - oy) * opt.tile_w + (x - ox))];
        const float v = (static_cast<float>(img[y * W + x]) - norm.offset) * norm.scale;
        for (std::int64_t c = 0; c < C; ++c)
          sum[(c * H + y) * W + x] += w * intensity_score(v, c, C);
        wsum[y * W + x] += w;
      }
  }
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t i = 0; i < H * W; ++i) sum[c * H * W + i] /= wsum[i];
  return sum;
}

void check_against_reference(const std::vector<std::uint8_t>& img, std::int64_t H,
                             std::int64_t W, SegmenterOptions opt) {
  const std::int64_t C = 5;
  const ImageView view{img.data(), PixelType::U8, H, W, W};
  const auto out = run(view, opt, C);
  const auto norm = temseg::percentile_affine(view, opt.normalization);
  const auto ref = reference_probs(img, H, W, opt, norm, C);
  double max_err = 0;
  std::int64_t label_checked = 0;
  for (std::int64_t i = 0; i < H * W; ++i) {
    int best = 0;
    double second = -1;
    for (std::int64_t c = 0; c < C; ++c) {
      max_err = std::max(max_err, std::fabs(ref[c * H * W + i] - out.probs[c * H * W + i]));
      if (ref[c * H * W + i] > ref[best * H * W + i]) best = static_cast<int>(c);
    }
    for (std::int64_t c = 0; c < C; ++c)
      if (c != best) second = std::max(second, ref[c * H * W + i]);
    if (ref[best * H * W + i] - second > 1e-4) {  // clear winner: labels must agree
      ++label_checked;
      REQUIRE(out.labels[i] == best);
    }
  }
  CHECK(max_err < 1e-5);
  CHECK(label_checked > H * W * 9 / 10);
}

}  // namespace

TEST_CASE("percentile_affine matches numpy's linear percentile") {
  // 0..99: np.percentile(v, [0.5, 99.5]) = [0.495, 98.505]
  std::vector<std::uint8_t> v(100);
  for (int i = 0; i < 100; ++i) v[i] = static_cast<std::uint8_t>(99 - i);
  const auto n = temseg::percentile_affine(ImageView{v.data(), PixelType::U8, 10, 10, 10}, {});
  const double lo = 0.0 + 1.0 * (99 * 0.005);
  const double hi = 99.0 - 1.0 * (1.0 - (99 * 0.995 - 98));
  CHECK(n.offset == static_cast<float>(0.5 * (lo + hi)));
  CHECK(n.scale == static_cast<float>(1.0 / (0.5 * (hi - lo))));

  // A constant image: hi - lo < 1e-6 -> hi = lo + 1.
  std::vector<std::uint16_t> flat(64, 1000);
  const auto f = temseg::percentile_affine(ImageView{flat.data(), PixelType::U16, 8, 8, 8}, {});
  CHECK(f.offset == 1000.5f);
  CHECK(f.scale == 2.0f);

  // Subsampling: step = ceil(sqrt(size / max_samples)) rows and columns.
  std::vector<std::uint8_t> img(40 * 40);
  for (int i = 0; i < 1600; ++i) img[i] = static_cast<std::uint8_t>((i * 37) % 251);
  std::vector<std::uint8_t> sub;
  for (int y = 0; y < 40; y += 3)
    for (int x = 0; x < 40; x += 3) sub.push_back(img[y * 40 + x]);
  temseg::PercentileNormalization p;
  p.max_samples = 200;  // 1600 / 200 = 8 -> step ceil(sqrt(8)) = 3
  const auto a = temseg::percentile_affine(ImageView{img.data(), PixelType::U8, 40, 40, 40}, p);
  p.max_samples = 1 << 20;
  const auto b = temseg::percentile_affine(
      ImageView{sub.data(), PixelType::U8, 14, 14, 14}, p);
  CHECK(a.offset == b.offset);
  CHECK(a.scale == b.scale);

  std::vector<float> bad{1.0f, NAN};
  CHECK_THROWS_AS(temseg::percentile_affine(ImageView{bad.data(), PixelType::F32, 1, 2, 2}, {}),
                  std::invalid_argument);
}

TEST_CASE("Segmenter with the intensity backend equals brute-force blending") {
  const std::int64_t H = 150, W = 170;
  const auto img = random_image(H, W, 1);
  SegmenterOptions opt;
  opt.tile_h = opt.tile_w = 64;
  opt.batch_size = 3;
  check_against_reference(img, H, W, opt);
  opt.window = temseg::WindowKind::Constant;
  opt.overlap = 0.5;
  check_against_reference(img, H, W, opt);
}

TEST_CASE("Segmenter: image smaller than the tile (reflect padding outside)") {
  const std::int64_t H = 40, W = 50;
  const auto img = random_image(H, W, 2);
  SegmenterOptions opt;
  opt.tile_h = opt.tile_w = 64;
  const ImageView view{img.data(), PixelType::U8, H, W, W};
  const auto out = run(view, opt);
  const auto norm = temseg::percentile_affine(view, opt.normalization);
  // One tile covers every pixel: the blended score is the tile's own score (w * s / w).
  for (std::int64_t i = 0; i < H * W; ++i) {
    const float v = (static_cast<float>(img[i]) - norm.offset) * norm.scale;
    for (std::int64_t c = 0; c < 5; ++c)
      CHECK(out.probs[c * H * W + i] == doctest::Approx(intensity_score(v, c, 5)).epsilon(1e-6));
  }
}

TEST_CASE("Segmenter output is independent of batching, threads and row stride") {
  const std::int64_t H = 131, W = 203;
  const auto img = random_image(H, W, 3);
  SegmenterOptions opt;
  opt.tile_h = 48;
  opt.tile_w = 40;
  opt.batch_size = 1;
  opt.num_threads = 1;
  const auto a = run(ImageView{img.data(), PixelType::U8, H, W, W}, opt);
  opt.batch_size = 7;
  opt.num_threads = 3;
  const auto b = run(ImageView{img.data(), PixelType::U8, H, W, W}, opt, 5, 4);  // max_batch 4
  CHECK(a.labels == b.labels);
  CHECK(a.probs == b.probs);

  // The same pixels as a crop of a wider uint16 buffer (row stride 260, offset 5 columns).
  std::vector<std::uint16_t> wide(static_cast<std::size_t>(H * 260), 65535);
  for (std::int64_t y = 0; y < H; ++y)
    for (std::int64_t x = 0; x < W; ++x) wide[y * 260 + 5 + x] = img[y * W + x];
  const auto c = run(ImageView{wide.data() + 5, PixelType::U16, H, W, 260}, opt);
  CHECK(a.labels == c.labels);
  CHECK(a.probs == c.probs);

  Segmenter seg(std::make_unique<IntensityBackend>(5), opt);
  CHECK(seg.segment(img.data(), H, W) == a.labels);
}

namespace {
// Returns log(intensity scores) as logits: the Segmenter must softmax them before blending.
class LogitBackend final : public temseg::Backend {
 public:
  std::string name() const override { return "logits"; }
  std::int64_t num_classes() const override { return 4; }
  bool outputs_probabilities() const override { return false; }
  void predict(const float* tiles, std::int64_t n, std::int64_t th, std::int64_t tw,
               float* scores) override {
    inner_.predict(tiles, n, th, tw, scores);
    for (std::int64_t i = 0; i < n * 4 * th * tw; ++i) scores[i] = std::log(scores[i]) + 3.0f;
  }

 private:
  IntensityBackend inner_{4};
};
}  // namespace

TEST_CASE("Segmenter applies the softmax to logits before blending") {
  const std::int64_t H = 70, W = 90;
  const auto img = random_image(H, W, 4);
  SegmenterOptions opt;
  opt.tile_h = opt.tile_w = 32;
  Segmenter seg(std::make_unique<LogitBackend>(), opt);
  std::vector<std::uint8_t> labels(H * W);
  std::vector<float> probs(4 * H * W);
  seg.segment(ImageView{img.data(), PixelType::U8, H, W, W}, labels.data(), W, probs.data());
  for (std::int64_t i = 0; i < H * W; ++i) {
    double s = 0;
    for (int c = 0; c < 4; ++c) s += probs[c * H * W + i];
    REQUIRE(s == doctest::Approx(1.0).epsilon(1e-5));
  }
  // softmax(log s) = s / sum(s) has the argmax of s: labels equal the intensity backend's.
  const auto ref = run(ImageView{img.data(), PixelType::U8, H, W, W}, opt, 4);
  std::int64_t same = 0;
  for (std::int64_t i = 0; i < H * W; ++i) same += labels[i] == ref.labels[i];
  CHECK(same > H * W * 99 / 100);
}

TEST_CASE("Segmenter streams finished bands in order") {
  const std::int64_t H = 300, W = 64;
  const auto img = random_image(H, W, 5);
  SegmenterOptions opt;
  opt.tile_h = opt.tile_w = 64;
  Segmenter seg(std::make_unique<IntensityBackend>(5), opt);
  std::int64_t next = 0, max_h = 0;
  seg.segment(ImageView{img.data(), PixelType::U8, H, W, W},
              [&](std::int64_t r0, std::int64_t r1, const std::uint8_t* lab, const float* p) {
                CHECK(r0 == next);
                CHECK(r1 > r0);
                CHECK(lab != nullptr);
                CHECK(p == nullptr);
                max_h = std::max(max_h, r1 - r0);
                next = r1;
              });
  CHECK(next == H);
  CHECK(max_h <= 64);
}

TEST_CASE("Segmenter rejects bad settings with clear errors") {
  SegmenterOptions opt;
  CHECK_THROWS_AS(Segmenter(nullptr, opt), std::invalid_argument);
  opt.tile_h = 0;
  CHECK_THROWS_AS(Segmenter(std::make_unique<IntensityBackend>(5), opt), std::invalid_argument);
  opt.tile_h = 64;
  opt.overlap = 1.0;
  CHECK_THROWS_AS(Segmenter(std::make_unique<IntensityBackend>(5), opt), std::invalid_argument);
  opt.overlap = 0.25;
  Segmenter seg(std::make_unique<IntensityBackend>(5), opt);
  CHECK_THROWS_AS(seg.segment(ImageView{}, [](auto, auto, auto, auto) {}),
                  std::invalid_argument);
}

TEST_CASE("metadata: flat JSON file and options_from_metadata") {
  const std::string path = "temseg_test_metadata.json";
  {
    std::ofstream f(path);
    f << "{\n  \"temseg.patch_size\": \"96\",\n  \"temseg.tile_multiple\": \"8\",\n"
         "  \"temseg.norm.method\": \"percentile\",\n  \"temseg.norm.lower\": \"1.0\",\n"
         "  \"temseg.norm.upper\": \"99.0\",\n  \"temseg.norm.max_samples\": \"1000\",\n"
         "  \"temseg.metadata\": \"{\\\"a\\\": [1, 2], \\\"b\\\": \\\"\\u00b5m\\\"}\"\n}\n";
  }
  const auto m = temseg::read_metadata_json(path);
  CHECK(m.at("temseg.metadata") == "{\"a\": [1, 2], \"b\": \"\xC2\xB5m\"}");
  SegmenterOptions base;
  base.overlap = 0.5;
  const auto opt = temseg::options_from_metadata(m, base);
  CHECK(opt.tile_h == 96);
  CHECK(opt.tile_w == 96);
  CHECK(opt.overlap == 0.5);
  CHECK(opt.normalization.lower == 1.0);
  CHECK(opt.normalization.upper == 99.0);
  CHECK(opt.normalization.max_samples == 1000);

  auto bad = m;
  bad["temseg.patch_size"] = "100";  // not a multiple of 8
  CHECK_THROWS_AS(temseg::options_from_metadata(bad, {}), std::invalid_argument);
  bad["temseg.patch_size"] = "96";
  bad["temseg.roi_size"] = "192";  // the inference tile, when the export records it
  CHECK(temseg::options_from_metadata(bad, {}).tile_h == 192);
  bad["temseg.roi_size"] = "190";
  CHECK_THROWS_WITH_AS(temseg::options_from_metadata(bad, {}),
                       "temseg metadata: roi_size 190 is not a positive multiple of 8",
                       std::invalid_argument);
  bad.erase("temseg.roi_size");
  bad.erase("temseg.norm.lower");
  CHECK_THROWS_WITH_AS(temseg::options_from_metadata(bad, {}),
                       "temseg metadata: missing key temseg.norm.lower", std::invalid_argument);
  {
    std::ofstream f(path);
    f << "{\"a\": 1}";
  }
  CHECK_THROWS_AS(temseg::read_metadata_json(path), std::runtime_error);
  std::remove(path.c_str());
  CHECK_THROWS_AS(temseg::read_metadata_json("does/not/exist.json"), std::runtime_error);
}
