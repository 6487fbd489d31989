// Pillow's convolution resize of 8-bit RGB (Image.resize with BILINEAR or BICUBIC, no box, no
// reducing_gap), re-implemented so that every output byte equals Pillow's: the same filter support
// scaled by the downscale factor, the same double-precision coefficients normalised per output
// pixel, the same 22-bit fixed-point weights, the horizontal pass first (over only the source rows
// the vertical pass reads) and the same rounding and clipping.
//
// Each output pixel depends only on its own coefficients, so a window of the output (the centre
// crop the network sees) can be computed without the rest, with the same values.
#pragma once

#include <cstdint>
#include <vector>

namespace semgir {

enum class ResampleFilter { Bilinear, Bicubic };

/// The window [x0, x0 + w) x [y0, y0 + h) of the (out_w x out_h) resize of the packed RGB image
/// (in_w x in_h): w * h * 3 bytes, row-major.
std::vector<uint8_t> resize_rgb_window(const uint8_t* rgb, int in_w, int in_h, int out_w, int out_h,
                                       ResampleFilter filter, int x0, int y0, int w, int h);

}  // namespace semgir
