// Image decoding with the Python runtime's rules (engine/images.py): EXIF (and XMP) orientation,
// alpha composited on white, 16-bit scaled to 8-bit, CMYK and palette converted, first frame of an
// animation, decompression-bomb pixel limit. Pixel-exact with Pillow for JPEG, PNG, WebP and GIF.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace semgir {

constexpr int64_t kDefaultMaxPixels = 64000000;
constexpr int64_t kDefaultMaxBytes = 256LL * 1024 * 1024;

/// A bad input: the message says what is wrong with this item (never crosses the C boundary).
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // height * width * 3
  std::string note;          // "; "-joined conversions, "" if none
};

/// Decode encoded bytes (JPEG, PNG, WebP, GIF) to 8-bit RGB; throws InputError.
RgbImage decode_image(const uint8_t* data, size_t size, int64_t max_pixels);

/// Read a whole file with the Python runtime's messages (not found, empty, too large, ...).
std::vector<uint8_t> read_file(const std::string& path, int64_t max_bytes);

/// Hex sha256 of a buffer.
std::string sha256_hex(const uint8_t* data, size_t size);

}  // namespace semgir
