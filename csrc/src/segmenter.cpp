#include "temseg/segmenter.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "temseg/band_accumulator.hpp"
#include "temseg/grid.hpp"
#include "temseg/thread_pool.hpp"

namespace temseg {

// ---------------------------------------------------------------------------------------
// Percentile normalisation, bitwise like temseg.data.normalize.Normalization.affine:
//   step = max(1, ceil(sqrt(size / max_samples)));  sample = float32(image[::step, ::step])
//   lo, hi = np.percentile(sample, [lower, upper])   (linear method, float64 result)
//   if hi - lo < 1e-6: hi = lo + 1;  offset = 0.5 (lo + hi);  scale = 1 / (0.5 (hi - lo))
// ---------------------------------------------------------------------------------------
namespace {

float pixel_value(const ImageView& im, std::int64_t y, std::int64_t x) {
  const std::int64_t i = y * im.row_stride + x;
  switch (im.type) {
    case PixelType::U8: return static_cast<float>(static_cast<const std::uint8_t*>(im.data)[i]);
    case PixelType::U16:
      return static_cast<float>(static_cast<const std::uint16_t*>(im.data)[i]);
    case PixelType::F32: return static_cast<const float*>(im.data)[i];
  }
  return 0.0f;
}

// numpy.percentile(..., method="linear") of the float32 values in v (v is reordered).
double np_percentile(std::vector<float>& v, double percent) {
  const double q = percent / 100.0;  // np.true_divide(q, 100) in float64
  const auto n = static_cast<std::int64_t>(v.size());
  const double virt = static_cast<double>(n - 1) * q;
  std::int64_t prev = static_cast<std::int64_t>(std::floor(virt));
  std::int64_t next = prev + 1;
  if (virt >= static_cast<double>(n - 1)) prev = next = n - 1;
  if (virt < 0) prev = next = 0;
  const double gamma = virt - static_cast<double>(prev);
  std::nth_element(v.begin(), v.begin() + prev, v.end());
  const float a = v[static_cast<std::size_t>(prev)];
  float b = a;
  if (next != prev) b = *std::min_element(v.begin() + prev + 1, v.end());
  // _lerp: diff in float32 (b - a of two float32 arrays), the rest in float64.
  const float diff = b - a;
  if (gamma >= 0.5) return static_cast<double>(b) - static_cast<double>(diff) * (1.0 - gamma);
  return static_cast<double>(a) + static_cast<double>(diff) * gamma;
}

}  // namespace

Normalization percentile_affine(const ImageView& image, const PercentileNormalization& p) {
  if (image.data == nullptr || image.height <= 0 || image.width <= 0)
    throw std::invalid_argument("percentile_affine: empty image");
  if (p.max_samples <= 0) throw std::invalid_argument("percentile_affine: max_samples <= 0");
  const double ratio = static_cast<double>(image.height * image.width) /
                       static_cast<double>(p.max_samples);
  const std::int64_t step =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(std::sqrt(ratio))));
  std::vector<float> sample;
  sample.reserve(static_cast<std::size_t>(((image.height + step - 1) / step) *
                                          ((image.width + step - 1) / step)));
  for (std::int64_t y = 0; y < image.height; y += step)
    for (std::int64_t x = 0; x < image.width; x += step) {
      const float v = pixel_value(image, y, x);
      if (!std::isfinite(v)) throw std::invalid_argument("image contains non-finite values");
      sample.push_back(v);
    }
  const double lo = np_percentile(sample, p.lower);
  double hi = np_percentile(sample, p.upper);
  if (hi - lo < 1e-6) hi = lo + 1.0;
  const double mid = 0.5 * (lo + hi), half = 0.5 * (hi - lo);
  Normalization n;
  n.offset = static_cast<float>(mid);
  n.scale = static_cast<float>(1.0 / half);
  return n;
}

// ---------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------
namespace {

const std::string& need(const std::map<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  if (it == m.end()) throw std::invalid_argument("temseg metadata: missing key " + key);
  return it->second;
}

double to_double(const std::string& key, const std::string& s) {
  try {
    std::size_t pos = 0;
    const double v = std::stod(s, &pos);
    if (pos != s.size()) throw std::invalid_argument("trailing characters");
    return v;
  } catch (const std::exception&) {
    throw std::invalid_argument("temseg metadata: " + key + " = '" + s + "' is not a number");
  }
}

}  // namespace

SegmenterOptions options_from_metadata(const std::map<std::string, std::string>& metadata,
                                       SegmenterOptions base) {
  const std::string& method = need(metadata, "temseg.norm.method");
  if (method != "percentile")
    throw std::invalid_argument("temseg metadata: unsupported normalisation '" + method + "'");
  // Default tile: temseg.roi_size (what `temseg predict` uses); exports older than that key
  // carry only the training patch size.
  const char* tile_key =
      metadata.count("temseg.roi_size") ? "temseg.roi_size" : "temseg.patch_size";
  const auto tile = static_cast<std::int64_t>(to_double(tile_key, need(metadata, tile_key)));
  const auto multiple = static_cast<std::int64_t>(
      to_double("temseg.tile_multiple", need(metadata, "temseg.tile_multiple")));
  if (tile <= 0 || multiple <= 0 || tile % multiple != 0)
    throw std::invalid_argument(std::string("temseg metadata: ") + (tile_key + 7) + " " +
                                std::to_string(tile) +
                                " is not a positive multiple of " + std::to_string(multiple));
  base.tile_h = base.tile_w = tile;
  base.normalization.lower = to_double("temseg.norm.lower", need(metadata, "temseg.norm.lower"));
  base.normalization.upper = to_double("temseg.norm.upper", need(metadata, "temseg.norm.upper"));
  base.normalization.max_samples = static_cast<std::int64_t>(
      to_double("temseg.norm.max_samples", need(metadata, "temseg.norm.max_samples")));
  base.fixed_affine = false;
  return base;
}

std::map<std::string, std::string> read_metadata_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open metadata file");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  std::size_t i = 0;
  auto fail = [&](const std::string& what) {
    throw std::runtime_error(path + ": invalid metadata JSON at byte " + std::to_string(i) +
                             ": " + what + " (expected a flat object of strings)");
  };
  auto ws = [&] {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) ++i;
  };
  auto put_utf8 = [](std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  };
  auto hex4 = [&]() -> unsigned {
    if (i + 4 > s.size()) fail("truncated \\u escape");
    const unsigned v = static_cast<unsigned>(std::stoul(s.substr(i, 4), nullptr, 16));
    i += 4;
    return v;
  };
  auto str = [&]() -> std::string {
    if (i >= s.size() || s[i] != '"') fail("expected a string");
    ++i;
    std::string out;
    while (true) {
      if (i >= s.size()) fail("unterminated string");
      const char c = s[i++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= s.size()) fail("unterminated escape");
      const char e = s[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && i + 6 <= s.size() && s[i] == '\\' &&
              s[i + 1] == 'u') {
            i += 2;
            const unsigned lo = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          put_utf8(out, cp);
          break;
        }
        default: fail(std::string("bad escape \\") + e);
      }
    }
  };
  std::map<std::string, std::string> out;
  ws();
  if (i >= s.size() || s[i] != '{') fail("expected '{'");
  ++i;
  ws();
  if (i < s.size() && s[i] == '}') return out;
  while (true) {
    ws();
    std::string key = str();
    ws();
    if (i >= s.size() || s[i] != ':') fail("expected ':'");
    ++i;
    ws();
    out[key] = str();
    ws();
    if (i < s.size() && s[i] == ',') {
      ++i;
      continue;
    }
    if (i < s.size() && s[i] == '}') return out;
    fail("expected ',' or '}'");
  }
}

// ---------------------------------------------------------------------------------------
// Segmenter
// ---------------------------------------------------------------------------------------
Segmenter::Segmenter(std::unique_ptr<Backend> backend, SegmenterOptions options)
    : backend_(std::move(backend)), options_(options) {
  if (!backend_) throw std::invalid_argument("Segmenter: backend is null");
  if (options_.tile_h <= 0 || options_.tile_w <= 0)
    throw std::invalid_argument("Segmenter: tile size must be positive");
  if (options_.batch_size < 1) throw std::invalid_argument("Segmenter: batch_size must be >= 1");
  if (!(options_.overlap >= 0.0 && options_.overlap < 1.0))
    throw std::invalid_argument("Segmenter: overlap must be in [0, 1)");
  if (backend_->num_classes() < 1 || backend_->num_classes() > 255)
    throw std::invalid_argument("Segmenter: backend reports " +
                                std::to_string(backend_->num_classes()) + " classes");
  window_ = make_window(options_.tile_h, options_.tile_w, options_.window, options_.sigma_scale,
                        options_.sigma_scale);
  const int threads = resolve_num_threads(options_.num_threads);
  if (threads > 1) pool_ = std::make_unique<ThreadPool>(threads);
}

Segmenter::~Segmenter() = default;

namespace {

// In-place softmax over the class axis of (n, C, hw) logits, float32.
void softmax_classes(float* s, std::int64_t n, std::int64_t C, std::int64_t hw, ThreadPool* pool) {
  parallel_for(pool, 0, n * hw, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t k = lo; k < hi; ++k) {
      float* base = s + (k / hw) * C * hw + (k % hw);
      float m = base[0];
      for (std::int64_t c = 1; c < C; ++c) m = std::max(m, base[c * hw]);
      float sum = 0.0f;
      for (std::int64_t c = 0; c < C; ++c) {
        const float e = std::exp(base[c * hw] - m);
        base[c * hw] = e;
        sum += e;
      }
      for (std::int64_t c = 0; c < C; ++c) base[c * hw] /= sum;
    }
  }, 4096);
}

}  // namespace

void Segmenter::segment(const ImageView& image, const BandCallback& on_band, bool want_probs) {
  if (image.data == nullptr || image.height <= 0 || image.width <= 0)
    throw std::invalid_argument("Segmenter::segment: empty image");
  if (image.row_stride < image.width)
    throw std::invalid_argument("Segmenter::segment: row_stride < width");
  const std::int64_t H = image.height, W = image.width;
  const std::int64_t th = options_.tile_h, tw = options_.tile_w;
  const std::int64_t C = backend_->num_classes();

  ExtractOptions ex;
  ex.pad = options_.pad;
  ex.norm = options_.fixed_affine ? options_.affine
                                  : percentile_affine(image, options_.normalization);
  last_affine_ = ex.norm;

  const TileGrid grid(H, W, th, tw, options_.overlap, options_.overlap);
  BandAccumulator acc(H, W, th, tw, C, window_, pool_ ? pool_->num_threads() : 1);
  std::int64_t batch = options_.batch_size;
  if (backend_->max_batch() > 0) batch = std::min(batch, backend_->max_batch());
  const std::int64_t tile_px = th * tw;
  const std::vector<std::int64_t> origins = grid.origins();
  const std::int64_t n_cols = grid.n_cols();
  std::vector<float> tiles(static_cast<std::size_t>(n_cols * tile_px));
  std::vector<float> scores(static_cast<std::size_t>(batch * C * tile_px));
  std::vector<std::uint8_t> band_labels;
  std::vector<float> band_probs;

  auto release = [&](std::int64_t row) {
    const std::int64_t r0 = acc.released_row();
    const std::int64_t h = row - r0;
    if (h <= 0) return;
    band_labels.resize(static_cast<std::size_t>(h * W));
    if (want_probs) band_probs.resize(static_cast<std::size_t>(C * h * W));
    acc.finalize_until(row, want_probs ? band_probs.data() : nullptr, band_labels.data(), r0);
    on_band(r0, row, band_labels.data(), want_probs ? band_probs.data() : nullptr);
  };

  for (std::int64_t k = 0; k < grid.n_rows(); ++k) {
    const std::int64_t* row_origins = origins.data() + 2 * k * n_cols;
    extract_tiles(image, row_origins, n_cols, th, tw, tiles.data(), tile_px, ex, pool_.get());
    for (std::int64_t j = 0; j < n_cols; j += batch) {
      const std::int64_t n = std::min(batch, n_cols - j);
      backend_->predict(tiles.data() + j * tile_px, n, th, tw, scores.data());
      if (!backend_->outputs_probabilities()) softmax_classes(scores.data(), n, C, tile_px,
                                                              pool_.get());
      acc.add(scores.data(), row_origins + 2 * j, n);
    }
    release(grid.final_row_after(k + 1));
  }
  release(H);
}

void Segmenter::segment(const ImageView& image, std::uint8_t* labels, std::int64_t labels_stride,
                        float* probs) {
  if (labels == nullptr) throw std::invalid_argument("Segmenter::segment: labels is null");
  if (labels_stride < image.width)
    throw std::invalid_argument("Segmenter::segment: labels_stride < width");
  const std::int64_t W = image.width, H = image.height;
  segment(image, [&](std::int64_t r0, std::int64_t r1, const std::uint8_t* lab, const float* p) {
    for (std::int64_t y = r0; y < r1; ++y)
      std::memcpy(labels + y * labels_stride, lab + (y - r0) * W, static_cast<std::size_t>(W));
    if (probs != nullptr && p != nullptr) {
      const std::int64_t h = r1 - r0, C = backend_->num_classes();
      for (std::int64_t c = 0; c < C; ++c)
        std::memcpy(probs + (c * H + r0) * W, p + c * h * W,
                    static_cast<std::size_t>(h * W) * sizeof(float));
    }
  }, probs != nullptr);
}

std::vector<std::uint8_t> Segmenter::segment(const std::uint8_t* data, std::int64_t height,
                                             std::int64_t width, std::int64_t row_stride) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(height * width));
  segment(ImageView{data, PixelType::U8, height, width, row_stride ? row_stride : width},
          out.data(), width);
  return out;
}

std::vector<std::uint8_t> Segmenter::segment(const std::uint16_t* data, std::int64_t height,
                                             std::int64_t width, std::int64_t row_stride) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(height * width));
  segment(ImageView{data, PixelType::U16, height, width, row_stride ? row_stride : width},
          out.data(), width);
  return out;
}

}  // namespace temseg
