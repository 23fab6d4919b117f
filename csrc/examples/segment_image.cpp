// temseg_segment: minimal host application of the embedded runtime.
//
//   temseg_segment --backend aoti --model model.pt2 --input image.pgm --output labels.pgm
//   temseg_segment --backend tensorrt --model model.engine --input image.pgm --output labels.pgm
//   temseg_segment --backend intensity --tile 64 --input image.pgm --output labels.pgm
//
// Input: binary PGM (P5), 8-bit (maxval <= 255) or 16-bit big-endian (maxval > 255), the
// format acquisition software can dump without extra libraries. Output: P5 PGM of class
// indices (or of the class grey values with --grey), optionally the blended probabilities
// as raw float32 (C, H, W) with --probs. Settings come from the model's metadata
// (tile = temseg.roi_size, normalisation); --tile/--overlap/--batch/--threads override.
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "temseg/segmenter.hpp"
#ifdef TEMSEG_HAVE_AOTI
#include "temseg/backends/aoti_backend.hpp"
#endif
#ifdef TEMSEG_HAVE_TENSORRT
#include "temseg/backends/tensorrt_backend.hpp"
#endif

namespace {

struct Pgm {
  std::int64_t width = 0, height = 0;
  int maxval = 255;
  std::vector<std::uint8_t> u8;
  std::vector<std::uint16_t> u16;
};

Pgm read_pgm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::string magic;
  in >> magic;
  if (magic != "P5") throw std::runtime_error(path + ": not a binary PGM (P5) file");
  auto next_int = [&]() {
    in >> std::ws;
    while (in.peek() == '#') {
      std::string comment;
      std::getline(in, comment);
      in >> std::ws;
    }
    long long v = -1;
    in >> v;
    if (!in || v <= 0) throw std::runtime_error(path + ": malformed PGM header");
    return v;
  };
  Pgm p;
  p.width = next_int();
  p.height = next_int();
  p.maxval = static_cast<int>(next_int());
  in.get();  // the single whitespace after maxval
  const std::size_t n = static_cast<std::size_t>(p.width * p.height);
  if (p.maxval <= 255) {
    p.u8.resize(n);
    in.read(reinterpret_cast<char*>(p.u8.data()), static_cast<std::streamsize>(n));
  } else {
    std::vector<unsigned char> raw(2 * n);
    in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(2 * n));
    p.u16.resize(n);
    for (std::size_t i = 0; i < n; ++i)
      p.u16[i] = static_cast<std::uint16_t>((raw[2 * i] << 8) | raw[2 * i + 1]);
  }
  if (!in) throw std::runtime_error(path + ": truncated PGM pixel data");
  return p;
}

void write_pgm(const std::string& path, const std::vector<std::uint8_t>& pixels,
               std::int64_t width, std::int64_t height) {
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error(path + ": cannot write");
  out << "P5\n" << width << " " << height << "\n255\n";
  out.write(reinterpret_cast<const char*>(pixels.data()),
            static_cast<std::streamsize>(pixels.size()));
  if (!out) throw std::runtime_error(path + ": write failed");
}

std::vector<int> parse_ints(const std::string& csv) {
  std::vector<int> v;
  std::stringstream ss(csv);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::stoi(item));
  return v;
}

int usage() {
  std::cerr << "usage: temseg_segment --backend intensity|aoti|tensorrt [--model PATH]\n"
               "         --input IMAGE.pgm --output LABELS.pgm [--probs PROBS.f32] [--grey]\n"
               "         [--tile N] [--overlap F] [--batch N] [--threads N] [--classes N]\n"
               "backends compiled in: intensity"
#ifdef TEMSEG_HAVE_AOTI
               " aoti"
#endif
#ifdef TEMSEG_HAVE_TENSORRT
               " tensorrt"
#endif
               "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  bool grey = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--grey") {
      grey = true;
    } else if (a.rfind("--", 0) == 0 && i + 1 < argc) {
      args[a.substr(2)] = argv[++i];
    } else {
      std::cerr << "temseg_segment: unexpected argument " << a << "\n";
      return usage();
    }
  }
  if (!args.count("backend") || !args.count("input") || !args.count("output")) return usage();
  try {
    const std::string backend_name = args["backend"];
    const int threads = args.count("threads") ? std::stoi(args["threads"]) : 0;
    temseg::SegmenterOptions options;
    std::unique_ptr<temseg::Backend> backend;
    std::map<std::string, std::string> metadata;
    if (backend_name == "intensity") {
      const int classes = args.count("classes") ? std::stoi(args["classes"]) : 5;
      backend = std::make_unique<temseg::IntensityBackend>(classes);
    }
#ifdef TEMSEG_HAVE_AOTI
    else if (backend_name == "aoti") {
      if (!args.count("model")) throw std::runtime_error("--backend aoti needs --model X.pt2");
      auto b = std::make_unique<temseg::AotiBackend>(args["model"], threads);
      metadata = b->metadata();
      backend = std::move(b);
    }
#endif
#ifdef TEMSEG_HAVE_TENSORRT
    else if (backend_name == "tensorrt") {
      if (!args.count("model"))
        throw std::runtime_error("--backend tensorrt needs --model X.engine");
      auto b = std::make_unique<temseg::TensorRTBackend>(args["model"]);
      metadata = b->metadata();
      backend = std::move(b);
    }
#endif
    else {
      std::cerr << "temseg_segment: backend '" << backend_name << "' is not compiled in\n";
      return usage();
    }
    if (!metadata.empty()) options = temseg::options_from_metadata(metadata, options);
    if (args.count("tile")) options.tile_h = options.tile_w = std::stoll(args["tile"]);
    if (args.count("overlap")) options.overlap = std::stod(args["overlap"]);
    if (args.count("batch")) options.batch_size = std::stoll(args["batch"]);
    options.num_threads = threads;

    const Pgm img = read_pgm(args["input"]);
    const temseg::ImageView view{
        img.u8.empty() ? static_cast<const void*>(img.u16.data()) : img.u8.data(),
        img.u8.empty() ? temseg::PixelType::U16 : temseg::PixelType::U8, img.height, img.width,
        img.width};
    temseg::Segmenter segmenter(std::move(backend), options);
    std::vector<std::uint8_t> labels(static_cast<std::size_t>(img.width * img.height));
    std::vector<float> probs;
    if (args.count("probs"))
      probs.resize(static_cast<std::size_t>(segmenter.backend().num_classes()) * labels.size());
    segmenter.segment(view, labels.data(), img.width, probs.empty() ? nullptr : probs.data());

    if (grey) {
      std::vector<int> values{0, 50, 100, 150, 200};
      auto it = metadata.find("temseg.class_values");
      if (it != metadata.end()) values = parse_ints(it->second);
      for (auto& l : labels) l = static_cast<std::uint8_t>(values.at(l));
    }
    write_pgm(args["output"], labels, img.width, img.height);
    if (!probs.empty()) {
      std::ofstream out(args["probs"], std::ios::binary);
      out.write(reinterpret_cast<const char*>(probs.data()),
                static_cast<std::streamsize>(probs.size() * sizeof(float)));
      if (!out) throw std::runtime_error(args["probs"] + ": write failed");
    }
    const auto affine = segmenter.last_affine();
    std::cout << "segmented " << img.width << "x" << img.height << " with "
              << segmenter.backend().name() << " (tile " << options.tile_h << ", offset "
              << affine.offset << ", scale " << affine.scale << ") -> " << args["output"]
              << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "temseg_segment: error: " << e.what() << "\n";
    return 1;
  }
}
