// temseg._C: the only pybind11 translation unit. Converts numpy arrays once (validating
// dtype / layout / shape with ValueError messages) and calls the pure C++ core.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "temseg/band_accumulator.hpp"
#include "temseg/extract.hpp"
#include "temseg/grid.hpp"
#include "temseg/thread_pool.hpp"
#include "temseg/window.hpp"

namespace py = pybind11;
using std::int64_t;

namespace {

[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// int or (int, int) -> (a, b)
template <typename T>
std::pair<T, T> pair_of(const py::handle& obj, const char* name) {
  try {
    if (py::isinstance<py::sequence>(obj) && !py::isinstance<py::str>(obj)) {
      auto seq = obj.cast<py::sequence>();
      if (seq.size() != 2) value_error(std::string(name) + " must be a number or a pair");
      return {seq[0].cast<T>(), seq[1].cast<T>()};
    }
    const T v = obj.cast<T>();
    return {v, v};
  } catch (const py::cast_error&) {
    value_error(std::string(name) + " must be a number or a pair of numbers");
  }
}

// (n, 2) integer array -> contiguous int64 array.
py::array_t<int64_t> origins_array(const py::handle& obj) {
  if (!py::isinstance<py::array>(obj)) value_error("origins must be a numpy array of shape (n, 2)");
  auto a = py::reinterpret_borrow<py::array>(obj);
  const char kind = a.dtype().kind();
  if (kind != 'i' && kind != 'u')
    value_error("origins must have an integer dtype, got " + dtype_str(a));
  if (a.ndim() != 2 || a.shape(1) != 2)
    value_error("origins must have shape (n, 2), got " + shape_str(a));
  return py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
}

temseg::PixelType pixel_type(const py::array& a) {
  if (a.dtype().is(py::dtype::of<std::uint8_t>())) return temseg::PixelType::U8;
  if (a.dtype().is(py::dtype::of<std::uint16_t>())) return temseg::PixelType::U16;
  if (a.dtype().is(py::dtype::of<float>())) return temseg::PixelType::F32;
  value_error("image dtype must be uint8, uint16 or float32, got " + dtype_str(a));
}

py::array_t<float> window_array(const std::vector<float>& w, int64_t th, int64_t tw) {
  py::array_t<float> out({th, tw});
  std::copy(w.begin(), w.end(), out.mutable_data());
  return out;
}

std::vector<float> window_from(const py::handle& window, int64_t th, int64_t tw,
                               const py::handle& sigma_scale) {
  if (py::isinstance<py::str>(window)) {
    const auto s = pair_of<double>(sigma_scale, "sigma_scale");
    return temseg::make_window(th, tw, temseg::parse_window_kind(window.cast<std::string>()),
                               s.first, s.second);
  }
  if (!py::isinstance<py::array>(window))
    value_error("window must be a mode name or a float32 numpy array of shape (tile_h, tile_w)");
  auto a = py::reinterpret_borrow<py::array>(window);
  if (!a.dtype().is(py::dtype::of<float>()))
    value_error("window dtype must be float32, got " + dtype_str(a));
  if (a.ndim() != 2 || a.shape(0) != th || a.shape(1) != tw)
    value_error("window must have shape (" + std::to_string(th) + ", " + std::to_string(tw) +
                "), got " + shape_str(a));
  auto c = py::array_t<float, py::array::c_style>::ensure(a);
  return std::vector<float>(c.data(), c.data() + th * tw);
}

py::array_t<float> extract(const py::array& image, const py::handle& origins_obj,
                           const py::handle& tile_size, float offset, float scale,
                           const std::string& pad_mode, float cval, const py::object& out_obj,
                           int num_threads) {
  const auto [th, tw] = pair_of<int64_t>(tile_size, "tile_size");
  if (th <= 0 || tw <= 0) value_error("tile_size must be > 0");
  if (image.ndim() != 2 && image.ndim() != 3)
    value_error("image must have shape (H, W) or (C, H, W), got " + shape_str(image));
  const auto type = pixel_type(image);
  const int64_t item = image.itemsize();
  const bool planar = image.ndim() == 3;
  const int64_t C = planar ? image.shape(0) : 1;
  const int64_t H = image.shape(planar ? 1 : 0), W = image.shape(planar ? 2 : 1);
  if (H == 0 || W == 0 || C == 0) value_error("image is empty: shape " + shape_str(image));
  const int64_t col_stride = image.strides(planar ? 2 : 1);
  const int64_t row_stride = image.strides(planar ? 1 : 0);
  const int64_t chan_stride = planar ? image.strides(0) : 0;
  if (col_stride != item && W > 1)
    value_error("image rows must be contiguous (last-axis stride == itemsize); "
                "use np.ascontiguousarray");
  if (row_stride % item != 0 || chan_stride % item != 0 || (H > 1 && row_stride < W * item))
    value_error("image row/channel strides must be positive multiples of the itemsize and rows "
                "must not overlap; use np.ascontiguousarray");
  const auto origins = origins_array(origins_obj);
  const int64_t n = origins.shape(0);

  py::array_t<float> out;
  if (out_obj.is_none()) {
    out = py::array_t<float>({n, C, th, tw});
  } else {
    if (!py::isinstance<py::array_t<float>>(out_obj) ||
        !py::reinterpret_borrow<py::array>(out_obj).dtype().is(py::dtype::of<float>()))
      value_error("out must be a float32 numpy array");
    out = py::reinterpret_borrow<py::array_t<float>>(out_obj);
    if (!(out.flags() & py::array::c_style)) value_error("out must be C-contiguous");
    if (!out.writeable()) value_error("out must be writeable");
    if (out.ndim() != 4 || out.shape(0) != n || out.shape(1) != C || out.shape(2) != th ||
        out.shape(3) != tw)
      value_error("out must have shape (" + std::to_string(n) + ", " + std::to_string(C) + ", " +
                  std::to_string(th) + ", " + std::to_string(tw) + "), got " + shape_str(out));
  }
  if (n == 0) return out;

  temseg::ExtractOptions opt;
  opt.norm = {offset, scale};
  opt.pad = temseg::parse_pad_mode(pad_mode);
  opt.cval = cval;
  const auto* base = static_cast<const char*>(image.data());
  const int64_t* o = origins.data();
  float* dst = out.mutable_data();
  {
    // Pure C++ on buffers kept alive by this frame; lets the Python producer thread read the
    // next tiles (or run the model) meanwhile.
    py::gil_scoped_release release;
    const int threads = temseg::resolve_num_threads(num_threads);
    std::unique_ptr<temseg::ThreadPool> pool;
    if (threads > 1 && n * C > 1) pool = std::make_unique<temseg::ThreadPool>(threads);
    for (int64_t c = 0; c < C; ++c) {
      temseg::ImageView view{base + c * chan_stride, type, H, W, row_stride / item};
      temseg::extract_tiles(view, o, n, th, tw, dst + c * th * tw, C * th * tw, opt, pool.get());
    }
  }
  return out;
}

class PyAccumulator {
 public:
  PyAccumulator(int64_t height, int64_t width, const py::handle& tile_size, int64_t n_classes,
                const py::handle& window, const py::handle& sigma_scale, int num_threads) {
    const auto [th, tw] = pair_of<int64_t>(tile_size, "tile_size");
    if (th <= 0 || tw <= 0) value_error("tile_size must be > 0");
    acc_ = std::make_unique<temseg::BandAccumulator>(
        height, width, th, tw, n_classes, window_from(window, th, tw, sigma_scale), num_threads);
  }

  void add(const py::handle& tiles_obj, const py::handle& origins_obj) {
    auto& a = *acc_;
    if (!py::isinstance<py::array>(tiles_obj))
      value_error("tiles must be a float32 numpy array of shape (n, C, tile_h, tile_w)");
    auto tiles = py::reinterpret_borrow<py::array>(tiles_obj);
    if (!tiles.dtype().is(py::dtype::of<float>()))
      value_error("tiles dtype must be float32, got " + dtype_str(tiles));
    if (tiles.ndim() != 4 || tiles.shape(1) != a.n_classes() || tiles.shape(2) != a.tile_h() ||
        tiles.shape(3) != a.tile_w())
      value_error("tiles must have shape (n, " + std::to_string(a.n_classes()) + ", " +
                  std::to_string(a.tile_h()) + ", " + std::to_string(a.tile_w()) + "), got " +
                  shape_str(tiles));
    if (!(tiles.flags() & py::array::c_style))
      value_error("tiles must be C-contiguous; use np.ascontiguousarray");
    const auto origins = origins_array(origins_obj);
    if (origins.shape(0) != tiles.shape(0))
      value_error("origins has " + std::to_string(origins.shape(0)) + " rows but tiles has " +
                  std::to_string(tiles.shape(0)) + " tiles");
    const auto* t = static_cast<const float*>(tiles.data());
    const int64_t* o = origins.data();
    const int64_t n = tiles.shape(0);
    // Pure C++ on buffers kept alive by this frame; lets the Python producer thread read the
    // next tiles (or run the model) meanwhile.
    py::gil_scoped_release release;
    a.add(t, o, n);
  }

  py::tuple finalize_until(int64_t row, bool probs, bool labels) {
    auto& a = *acc_;
    const int64_t first = a.released_row();
    if (row < first || row > a.height())
      value_error("row " + std::to_string(row) + " outside [released_row=" + std::to_string(first) +
                  ", height=" + std::to_string(a.height()) + "]");
    const int64_t h = row - first;
    py::object p = py::none(), l = py::none();
    float* pp = nullptr;
    std::uint8_t* lp = nullptr;
    if (probs) {
      py::array_t<float> arr({a.n_classes(), h, a.width()});
      pp = arr.mutable_data();
      p = arr;
    }
    if (labels) {
      py::array_t<std::uint8_t> arr({h, a.width()});
      lp = arr.mutable_data();
      l = arr;
    }
    {
      // Pure C++ on buffers we own (kept alive by p / l); lets other Python threads run.
      py::gil_scoped_release release;
      a.finalize_until(row, pp, lp, first);
    }
    return py::make_tuple(p, l);
  }

  temseg::BandAccumulator& acc() { return *acc_; }

 private:
  std::unique_ptr<temseg::BandAccumulator> acc_;
};

py::array_t<int64_t> to_array(const std::vector<int64_t>& v) {
  py::array_t<int64_t> a(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "temseg C++ core: MONAI-compatible tile grid, tile extraction with normalisation and "
      "padding, blending windows and a streaming band accumulator.";

  py::class_<temseg::TileGrid>(m, "TileGrid", R"doc(
Tile origins covering a (height, width) slide, MONAI compatible
(monai.inferers.utils._get_scan_interval + monai.data.utils.dense_patch_slices).

TileGrid(height, width, tile_size, overlap=0.25, overlap_px=None)
  tile_size: int or (tile_h, tile_w); overlap: float in [0, 1) or a pair;
  overlap_px: int or pair in [0, tile) -- when given, overrides `overlap`.
Axes smaller than the tile get one tile at origin -pad_before (MONAI pads by
(tile - size) // 2 before). Origins are row-major: tile row by tile row.)doc")
      .def(py::init([](int64_t height, int64_t width, const py::handle& tile_size,
                       const py::handle& overlap, const py::handle& overlap_px) {
             const auto [th, tw] = pair_of<int64_t>(tile_size, "tile_size");
             if (!overlap_px.is_none()) {
               const auto [ph, pw] = pair_of<int64_t>(overlap_px, "overlap_px");
               return temseg::TileGrid::from_pixels(height, width, th, tw, ph, pw);
             }
             const auto [oh, ow] = pair_of<double>(overlap, "overlap");
             return temseg::TileGrid(height, width, th, tw, oh, ow);
           }),
           py::arg("height"), py::arg("width"), py::arg("tile_size"),
           py::arg("overlap") = 0.25, py::arg("overlap_px") = py::none())
      .def_property_readonly("height", &temseg::TileGrid::height)
      .def_property_readonly("width", &temseg::TileGrid::width)
      .def_property_readonly("tile_size", [](const temseg::TileGrid& g) {
        return py::make_tuple(g.tile_h(), g.tile_w());
      })
      .def_property_readonly("stride", [](const temseg::TileGrid& g) {
        return py::make_tuple(g.rows().stride, g.cols().stride);
      })
      .def_property_readonly("pad_before", [](const temseg::TileGrid& g) {
        return py::make_tuple(g.rows().pad_before, g.cols().pad_before);
      }, "(top, left) MONAI padding for axes smaller than the tile (else 0)")
      .def_property_readonly("row_starts", [](const temseg::TileGrid& g) {
        return to_array(g.rows().starts);
      }, "int64 (n_rows,) tile-row origins y")
      .def_property_readonly("col_starts", [](const temseg::TileGrid& g) {
        return to_array(g.cols().starts);
      }, "int64 (n_cols,) tile-column origins x")
      .def_property_readonly("n_rows", &temseg::TileGrid::n_rows)
      .def_property_readonly("n_cols", &temseg::TileGrid::n_cols)
      .def("__len__", &temseg::TileGrid::size)
      .def("origins", [](const temseg::TileGrid& g) {
        auto flat = g.origins();
        py::array_t<int64_t> a({g.size(), int64_t{2}});
        std::copy(flat.begin(), flat.end(), a.mutable_data());
        return a;
      }, "int64 (n, 2) array of (y, x) tile origins, row-major")
      .def("final_row_after", &temseg::TileGrid::final_row_after, py::arg("tile_row"),
           "Rows [0, result) are final once tile rows [0, tile_row) were accumulated.")
      .def("__repr__", [](const temseg::TileGrid& g) {
        return "TileGrid(height=" + std::to_string(g.height()) + ", width=" +
               std::to_string(g.width()) + ", tile=(" + std::to_string(g.tile_h()) + ", " +
               std::to_string(g.tile_w()) + "), stride=(" + std::to_string(g.rows().stride) +
               ", " + std::to_string(g.cols().stride) + "), tiles=" + std::to_string(g.n_rows()) +
               "x" + std::to_string(g.n_cols()) + ")";
      });

  m.def("make_window",
        [](const py::handle& tile_size, const std::string& mode, const py::handle& sigma_scale) {
          const auto [th, tw] = pair_of<int64_t>(tile_size, "tile_size");
          const auto s = pair_of<double>(sigma_scale, "sigma_scale");
          return window_array(
              temseg::make_window(th, tw, temseg::parse_window_kind(mode), s.first, s.second), th, tw);
        },
        py::arg("tile_size"), py::arg("mode") = "gaussian", py::arg("sigma_scale") = 0.125,
        R"doc(Blending window, float32 (tile_h, tile_w), all weights > 0.
mode: "constant" | "gaussian" (== monai compute_importance_map) | "cosine" (Hann, floored at 1e-3).)doc");

  m.def("extract_tiles", &extract, py::arg("image"), py::arg("origins"), py::arg("tile_size"),
        py::arg("offset") = 0.0f, py::arg("scale") = 1.0f, py::arg("pad_mode") = "reflect",
        py::arg("cval") = 0.0f, py::arg("out") = py::none(), py::arg("num_threads") = 0,
        R"doc(Extract tiles into a float32 batch: out = (x - offset) * scale.
image: uint8 | uint16 | float32, (H, W) or (C, H, W), last axis contiguous (any row stride).
origins: integer (n, 2) (y, x), may reach outside the image (padded with pad_mode:
"reflect" (numpy), "symmetric", "edge", "constant" (cval, in raw units)).
Returns / fills `out`: float32 C-contiguous (n, C, tile_h, tile_w) (C = 1 for 2-D images).)doc");

  py::class_<PyAccumulator>(m, "BandAccumulator", R"doc(
Streaming accumulator of window-weighted tile scores over a (height, width) slide.

BandAccumulator(height, width, tile_size, n_classes, window="gaussian", sigma_scale=0.125,
                num_threads=0)
  window: "constant" | "gaussian" | "cosine" or a float32 (tile_h, tile_w) array of weights > 0.
Memory: capacity_rows * width * (n_classes + 1) * 4 bytes; capacity_rows stays at tile_h when
tiles are added tile row by tile row and finalize_until(grid.final_row_after(k)) is called
before adding tile row k. Tiles touching released rows raise ValueError.)doc")
      .def(py::init<int64_t, int64_t, const py::handle&, int64_t, const py::handle&,
                    const py::handle&, int>(),
           py::arg("height"), py::arg("width"), py::arg("tile_size"), py::arg("n_classes"),
           py::arg("window") = "gaussian", py::arg("sigma_scale") = 0.125,
           py::arg("num_threads") = 0)
      .def("add", &PyAccumulator::add, py::arg("tiles"), py::arg("origins"),
           "tiles: float32 C-contiguous (n, n_classes, tile_h, tile_w); origins: int (n, 2) (y, x).")
      .def("finalize_until", &PyAccumulator::finalize_until, py::arg("row"),
           py::arg("probs") = true, py::arg("labels") = false,
           R"doc(Release rows [released_row, row). Returns (probs, labels):
probs float32 (n_classes, h, width) = weighted mean scores (or None),
labels uint8 (h, width) = argmax over classes (or None). Uncovered pixels: 0.)doc")
      .def_property_readonly("height", [](PyAccumulator& s) { return s.acc().height(); })
      .def_property_readonly("width", [](PyAccumulator& s) { return s.acc().width(); })
      .def_property_readonly("tile_size", [](PyAccumulator& s) {
        return py::make_tuple(s.acc().tile_h(), s.acc().tile_w());
      })
      .def_property_readonly("n_classes", [](PyAccumulator& s) { return s.acc().n_classes(); })
      .def_property_readonly("num_threads", [](PyAccumulator& s) { return s.acc().num_threads(); })
      .def_property_readonly("released_row", [](PyAccumulator& s) { return s.acc().released_row(); })
      .def_property_readonly("touched_row", [](PyAccumulator& s) { return s.acc().touched_row(); })
      .def_property_readonly("buffered_rows", [](PyAccumulator& s) { return s.acc().buffered_rows(); })
      .def_property_readonly("capacity_rows", [](PyAccumulator& s) { return s.acc().capacity_rows(); })
      .def_property_readonly("window", [](PyAccumulator& s) {
        return window_array(s.acc().window(), s.acc().tile_h(), s.acc().tile_w());
      }, "float32 (tile_h, tile_w) copy of the blending window");
}
