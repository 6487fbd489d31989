// Image decoding: libjpeg-turbo, libpng, libwebp and giflib, with Pillow's conversions (see decode.hpp).
#include "decode.hpp"

#include <gif_lib.h>
#include <jpeglib.h>
#include <jerror.h>
#include <openssl/evp.h>
#include <png.h>
#include <sys/stat.h>
#include <webp/decode.h>
#include <webp/demux.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <regex>

namespace semgir {
namespace {

// ---------------------------------------------------------------------------------------------
// the decoded-but-unconverted image, in the Pillow mode that format gives
// ---------------------------------------------------------------------------------------------
enum class Mode { L, LA, RGB, RGBA, CMYK, I16 };

struct Raw {
  int w = 0, h = 0;
  Mode mode = Mode::RGB;
  std::vector<uint8_t> px;     // 8-bit interleaved channels
  std::vector<uint16_t> px16;  // Mode::I16
  std::vector<std::string> notes;
  std::string exif;  // TIFF-structured EXIF block ("Exif\0\0" prefix allowed)
  std::string xmp;   // XMP packet text
};

const char* const kUnrecognised = "not a recognised image format (corrupt or not an image)";

void check_size(int64_t w, int64_t h, int64_t max_pixels) {
  if (w <= 0 || h <= 0)
    throw InputError("image has no pixels (" + std::to_string(w) + "x" + std::to_string(h) + ")");
  if (w * h > max_pixels)
    throw InputError("image too large: " + std::to_string(w) + "x" + std::to_string(h) + " = " +
                     std::to_string(w * h) + " pixels > limit " + std::to_string(max_pixels) +
                     " (decompression-bomb guard)");
}

// ---------------------------------------------------------------------------------------------
// JPEG (libjpeg-turbo with Pillow's settings: ISLOW IDCT, fancy upsampling, CMYK as Adobe-inverted)
// ---------------------------------------------------------------------------------------------
struct JpegErr {
  jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;  // input ended before every scanline was decoded
  bool header_read;
};

void jpeg_error_exit(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErr*>(c->err);
  (*c->err->format_message)(c, e->message);
  std::longjmp(e->jump, 1);
}

void jpeg_emit(j_common_ptr c, int level) {
  auto* e = reinterpret_cast<JpegErr*>(c->err);
  if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) {
    auto* d = reinterpret_cast<j_decompress_ptr>(c);
    // Pillow stops at the end of the data: an error unless every scanline was already out
    if (!d->global_state || d->output_scanline < d->output_height || d->output_height == 0) e->truncated = true;
  }
}

void jpeg_silent(j_common_ptr) {}

// Everything between setjmp and a longjmp is plain C data, so no destructor is skipped.
bool decode_jpeg_core(const uint8_t* data, size_t size, int64_t max_pixels, Raw* out, std::string* err,
                      bool* too_large, int64_t* dims, bool* header_read) {
  jpeg_decompress_struct cinfo;
  JpegErr jerr;
  std::memset(&jerr, 0, sizeof jerr);
  cinfo.err = jpeg_std_error(&jerr.pub);
  jerr.pub.error_exit = jpeg_error_exit;
  jerr.pub.emit_message = jpeg_emit;
  jerr.pub.output_message = jpeg_silent;
  if (setjmp(jerr.jump)) {
    *err = jerr.message;
    *header_read = jerr.header_read;
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  jerr.header_read = true;
  dims[0] = cinfo.image_width;
  dims[1] = cinfo.image_height;
  if (cinfo.image_width == 0 || cinfo.image_height == 0 ||
      int64_t(cinfo.image_width) * int64_t(cinfo.image_height) > max_pixels) {
    *too_large = true;
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
    if (m->marker != JPEG_APP0 + 1) continue;
    if (m->data_length >= 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0 && out->exif.empty())
      out->exif.assign(reinterpret_cast<const char*>(m->data), m->data_length);
    static const char kXmp[] = "http://ns.adobe.com/xap/1.0/";
    if (m->data_length > sizeof kXmp && std::memcmp(m->data, kXmp, sizeof kXmp) == 0 && out->xmp.empty())
      out->xmp.assign(reinterpret_cast<const char*>(m->data) + sizeof kXmp, m->data_length - sizeof kXmp);
  }
  switch (cinfo.num_components) {
    case 1: out->mode = Mode::L; cinfo.out_color_space = JCS_GRAYSCALE; break;
    case 3: out->mode = Mode::RGB; cinfo.out_color_space = JCS_RGB; break;
    case 4: out->mode = Mode::CMYK; cinfo.out_color_space = JCS_CMYK; break;
    default:
      std::snprintf(jerr.message, sizeof jerr.message, "unsupported JPEG with %d components", cinfo.num_components);
      *err = jerr.message;
      jpeg_destroy_decompress(&cinfo);
      return false;
  }
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&cinfo);
  out->w = int(cinfo.output_width);
  out->h = int(cinfo.output_height);
  const size_t row = size_t(cinfo.output_width) * cinfo.output_components;
  out->px.resize(row * cinfo.output_height);  // resize before setjmp paths that longjmp: vector is already built
  while (cinfo.output_scanline < cinfo.output_height && !jerr.truncated) {
    JSAMPROW r = out->px.data() + row * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &r, 1);
  }
  if (!jerr.truncated) jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (jerr.truncated) {
    *err = "truncated";
    return false;
  }
  if (out->mode == Mode::CMYK)  // Pillow reads 4-component JPEGs as "CMYK;I" (Adobe's inverted convention)
    for (auto& v : out->px) v = uint8_t(255 - v);
  return true;
}

Raw decode_jpeg(const uint8_t* data, size_t size, int64_t max_pixels) {
  Raw raw;
  std::string err;
  bool too_large = false;
  int64_t dims[2] = {0, 0};
  bool header_read = true;
  if (decode_jpeg_core(data, size, max_pixels, &raw, &err, &too_large, dims, &header_read)) return raw;
  if (too_large) check_size(dims[0], dims[1], max_pixels);
  if (!header_read) throw InputError(kUnrecognised);  // as Pillow: no plugin could open it
  if (err == "truncated") throw InputError("truncated image: image file is truncated");
  throw InputError("cannot decode image: " + err);
}

// ---------------------------------------------------------------------------------------------
// PNG (libpng; Pillow's modes: 16-bit colour keeps the high byte, 16-bit grey is I;16, palette
// transparency becomes alpha, grey/RGB colour-key transparency is ignored)
// ---------------------------------------------------------------------------------------------
struct PngReader {
  const uint8_t* data;
  size_t size;
  size_t pos;
};

void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (n > r->size - r->pos) png_error(png, "truncated");
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

void png_err(png_structp png, png_const_charp msg) {
  auto* buf = static_cast<char*>(png_get_error_ptr(png));
  std::snprintf(buf, 256, "%s", msg);
  png_longjmp(png, 1);
}

void png_warn(png_structp, png_const_charp) {}

struct PngState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  char message[256] = {0};
  bool header_read = false;
  std::vector<png_bytep> rows;
};

bool decode_png_core(PngState* st, PngReader* rd, int64_t max_pixels, Raw* out, bool* too_large, int64_t* dims,
                     int* frames) {
  png_structp png = st->png;
  png_infop info = st->info;
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_read_fn(png, rd, png_read_mem);
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_ALWAYS, reinterpret_cast<png_const_bytep>("acTL"), 1);
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
  png_read_info(png, info);
  st->header_read = true;
  png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  dims[0] = w;
  dims[1] = h;
  if (int64_t(w) * int64_t(h) > max_pixels || w == 0 || h == 0) {
    *too_large = true;
    return false;
  }
  png_unknown_chunkp unk = nullptr;
  int nunk = png_get_unknown_chunks(png, info, &unk);
  for (int i = 0; i < nunk; ++i)
    if (std::memcmp(unk[i].name, "acTL", 4) == 0 && unk[i].size >= 4)
      *frames = int((unk[i].data[0] << 24) | (unk[i].data[1] << 16) | (unk[i].data[2] << 8) | unk[i].data[3]);
  int depth = png_get_bit_depth(png, info);
  int ctype = png_get_color_type(png, info);
  bool trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
  switch (ctype) {
    case PNG_COLOR_TYPE_GRAY:
      if (depth == 16) {
        out->mode = Mode::I16;
      } else {
        out->mode = Mode::L;
        if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);
      }
      break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: out->mode = Mode::LA; break;
    case PNG_COLOR_TYPE_RGB: out->mode = Mode::RGB; break;
    case PNG_COLOR_TYPE_RGB_ALPHA: out->mode = Mode::RGBA; break;
    case PNG_COLOR_TYPE_PALETTE:
      png_set_palette_to_rgb(png);
      if (trns) {
        png_set_tRNS_to_alpha(png);
        out->mode = Mode::RGBA;
      } else {
        out->mode = Mode::RGB;
      }
      break;
    default: png_error(png, "unknown PNG colour type");
  }
  if (depth == 16 && out->mode != Mode::I16) png_set_strip_16(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  size_t rowbytes = png_get_rowbytes(png, info);
  out->w = int(w);
  out->h = int(h);
  std::vector<uint8_t>& buf = out->px;
  buf.resize(rowbytes * h);
  st->rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) st->rows[y] = buf.data() + rowbytes * y;
  png_read_image(png, st->rows.data());
  png_read_end(png, info);  // eXIf and iTXt after the image data
  png_uint_32 exif_len = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(png, info, &exif_len, &exif) && exif && exif_len) out->exif.assign((const char*)exif, exif_len);
  png_textp text = nullptr;
  int ntext = 0;
  png_get_text(png, info, &text, &ntext);
  for (int i = 0; i < ntext; ++i)
    if (std::strcmp(text[i].key, "XML:com.adobe.xmp") == 0 && text[i].text)
      out->xmp.assign(text[i].text, text[i].itxt_length ? text[i].itxt_length : text[i].text_length);
  return true;
}

Raw decode_png(const uint8_t* data, size_t size, int64_t max_pixels) {
  Raw raw;
  PngState st;
  PngReader rd{data, size, 0};
  st.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, st.message, png_err, png_warn);
  if (!st.png) throw std::bad_alloc();
  st.info = png_create_info_struct(st.png);
  bool too_large = false;
  int64_t dims[2] = {0, 0};
  int frames = 1;
  bool ok = st.info && decode_png_core(&st, &rd, max_pixels, &raw, &too_large, dims, &frames);
  png_destroy_read_struct(&st.png, &st.info, nullptr);
  if (too_large) check_size(dims[0], dims[1], max_pixels);
  if (!ok) {
    std::string msg = st.message;
    if (!st.header_read) throw InputError(kUnrecognised);
    if (msg == "truncated" || msg.find("Read Error") != std::string::npos || msg.find("EOF") != std::string::npos)
      throw InputError("truncated image: image file is truncated");
    throw InputError("cannot decode image: " + msg);
  }
  if (raw.mode == Mode::I16) {  // big-endian samples
    raw.px16.resize(size_t(raw.w) * raw.h);
    for (size_t i = 0; i < raw.px16.size(); ++i) raw.px16[i] = uint16_t((raw.px[2 * i] << 8) | raw.px[2 * i + 1]);
    raw.px.clear();
  }
  if (frames > 1) raw.notes.push_back("animated (" + std::to_string(frames) + " frames): scored the first frame");
  return raw;
}

// ---------------------------------------------------------------------------------------------
// WebP (libwebp's animation decoder, as Pillow: the first frame on its canvas)
// ---------------------------------------------------------------------------------------------
Raw decode_webp(const uint8_t* data, size_t size, int64_t max_pixels) {
  Raw raw;
  WebPData wd{data, size};
  std::unique_ptr<WebPDemuxer, void (*)(WebPDemuxer*)> demux(WebPDemux(&wd), WebPDemuxDelete);
  if (!demux) throw InputError(kUnrecognised);
  uint32_t w = WebPDemuxGetI(demux.get(), WEBP_FF_CANVAS_WIDTH), h = WebPDemuxGetI(demux.get(), WEBP_FF_CANVAS_HEIGHT);
  uint32_t flags = WebPDemuxGetI(demux.get(), WEBP_FF_FORMAT_FLAGS);
  uint32_t frames = WebPDemuxGetI(demux.get(), WEBP_FF_FRAME_COUNT);
  check_size(w, h, max_pixels);
  WebPChunkIterator it;
  if (WebPDemuxGetChunk(demux.get(), "EXIF", 1, &it)) {
    raw.exif.assign(reinterpret_cast<const char*>(it.chunk.bytes), it.chunk.size);
    WebPDemuxReleaseChunkIterator(&it);
  }
  if (WebPDemuxGetChunk(demux.get(), "XMP ", 1, &it)) {
    raw.xmp.assign(reinterpret_cast<const char*>(it.chunk.bytes), it.chunk.size);
    WebPDemuxReleaseChunkIterator(&it);
  }
  bool alpha = (flags & ALPHA_FLAG) != 0;
  if (!alpha && frames <= 1) {  // a still image without alpha: the plain decoder
    WebPIterator fr;
    if (WebPDemuxGetFrame(demux.get(), 1, &fr)) {
      WebPBitstreamFeatures feat;
      if (WebPGetFeatures(fr.fragment.bytes, fr.fragment.size, &feat) == VP8_STATUS_OK) alpha = feat.has_alpha;
      WebPDemuxReleaseIterator(&fr);
    }
  }
  WebPAnimDecoderOptions opt;
  WebPAnimDecoderOptionsInit(&opt);
  opt.color_mode = MODE_RGBA;
  opt.use_threads = 0;
  std::unique_ptr<WebPAnimDecoder, void (*)(WebPAnimDecoder*)> dec(WebPAnimDecoderNew(&wd, &opt),
                                                                     WebPAnimDecoderDelete);
  if (!dec) throw InputError("cannot decode image: invalid WebP data");
  uint8_t* buf = nullptr;
  int ts = 0;
  if (!WebPAnimDecoderGetNext(dec.get(), &buf, &ts) || !buf)
    throw InputError("truncated image: image file is truncated");
  raw.w = int(w);
  raw.h = int(h);
  const size_t n = size_t(w) * h;
  if (alpha) {
    raw.mode = Mode::RGBA;
    raw.px.assign(buf, buf + 4 * n);
  } else {
    raw.mode = Mode::RGB;
    raw.px.resize(3 * n);
    for (size_t i = 0; i < n; ++i) std::memcpy(&raw.px[3 * i], buf + 4 * i, 3);
  }
  if (frames > 1) raw.notes.push_back("animated (" + std::to_string(frames) + " frames): scored the first frame");
  return raw;
}

// ---------------------------------------------------------------------------------------------
// GIF (giflib; Pillow's first frame: mode P with the frame's or the global palette, L when there is
// none or it is the identity ramp; the canvas is the screen grown to the frame, filled with the
// transparent index (else 0) outside the frame; "transparency" from the first graphic control block)
// ---------------------------------------------------------------------------------------------
struct GifReader {
  const uint8_t* data;
  size_t size;
  size_t pos;
};

int gif_read(GifFileType* gif, GifByteType* out, int n) {
  auto* r = static_cast<GifReader*>(gif->UserData);
  size_t k = std::min(size_t(n), r->size - r->pos);
  std::memcpy(out, r->data + r->pos, k);
  r->pos += k;
  return int(k);
}

bool palette_needed(const ColorMapObject* m) {  // GifImagePlugin._is_palette_needed
  for (int i = 0; i < m->ColorCount; ++i) {
    const GifColorType& c = m->Colors[i];
    if (!(c.Red == i && c.Green == i && c.Blue == i)) return true;
  }
  return false;
}

Raw decode_gif(const uint8_t* data, size_t size, int64_t max_pixels) {
  GifReader rd{data, size, 0};
  int err = 0;
  std::unique_ptr<GifFileType, void (*)(GifFileType*)> gif(DGifOpen(&rd, gif_read, &err), [](GifFileType* g) {
    int e;
    DGifCloseFile(g, &e);
  });
  if (!gif) throw InputError(kUnrecognised);
  const ColorMapObject* global = gif->SColorMap && palette_needed(gif->SColorMap) ? gif->SColorMap : nullptr;
  int transparency = -1;
  int frames = 0;
  Raw raw;
  std::vector<uint8_t> idx;  // palette indices / grey levels of the canvas
  std::vector<uint8_t> pal;  // 256 RGB entries (ramp beyond the palette, as Pillow's)
  bool have_palette = false;
  auto truncated = [] { return InputError("truncated image: image file is truncated"); };
  for (;;) {
    GifRecordType type;
    if (DGifGetRecordType(gif.get(), &type) == GIF_ERROR) {
      if (frames == 0) throw truncated();
      break;  // later frames are only counted, like Pillow's n_frames
    }
    if (type == TERMINATE_RECORD_TYPE) break;
    if (type == EXTENSION_RECORD_TYPE) {
      int code = 0;
      GifByteType* ext = nullptr;
      if (DGifGetExtension(gif.get(), &code, &ext) == GIF_ERROR) {
        if (frames == 0) throw truncated();
        break;
      }
      if (frames == 0 && code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4 && (ext[1] & 1)) transparency = ext[4];
      while (ext) {
        if (DGifGetExtensionNext(gif.get(), &ext) == GIF_ERROR) {
          if (frames == 0) throw truncated();
          ext = nullptr;
          goto done;
        }
      }
      continue;
    }
    if (type != IMAGE_DESC_RECORD_TYPE) continue;
    if (DGifGetImageDesc(gif.get()) == GIF_ERROR) {
      if (frames == 0) throw truncated();
      break;
    }
    if (++frames > 1) {  // count only: skip the pixel data
      int cs = 0;
      GifByteType* block = nullptr;
      if (DGifGetCode(gif.get(), &cs, &block) == GIF_ERROR) break;
      bool ok = true;
      while (block && ok) ok = DGifGetCodeNext(gif.get(), &block) != GIF_ERROR;
      if (!ok) break;
      continue;
    }
    const GifImageDesc& d = gif->Image;
    const int W = std::max<int>(gif->SWidth, d.Left + d.Width), H = std::max<int>(gif->SHeight, d.Top + d.Height);
    check_size(W, H, max_pixels);
    const ColorMapObject* frame_pal = d.ColorMap ? (palette_needed(d.ColorMap) ? d.ColorMap : nullptr) : global;
    have_palette = frame_pal != nullptr;
    pal.resize(256 * 3);
    for (int i = 0; i < 256; ++i) pal[3 * i] = pal[3 * i + 1] = pal[3 * i + 2] = uint8_t(i);
    if (frame_pal)
      for (int i = 0; i < std::min(frame_pal->ColorCount, 256); ++i) {
        pal[3 * i] = frame_pal->Colors[i].Red;
        pal[3 * i + 1] = frame_pal->Colors[i].Green;
        pal[3 * i + 2] = frame_pal->Colors[i].Blue;
      }
    raw.w = W;
    raw.h = H;
    idx.assign(size_t(W) * H, uint8_t(transparency >= 0 ? transparency : 0));
    std::vector<GifPixelType> line(std::max(d.Width, 1));
    static const int kStart[] = {0, 4, 2, 1}, kStep[] = {8, 8, 4, 2};
    std::vector<int> rows;
    if (d.Interlace)
      for (int pass = 0; pass < 4; ++pass)
        for (int y = kStart[pass]; y < d.Height; y += kStep[pass]) rows.push_back(y);
    else
      for (int y = 0; y < d.Height; ++y) rows.push_back(y);
    for (int y : rows) {
      if (DGifGetLine(gif.get(), line.data(), d.Width) == GIF_ERROR) {
        if (gif->Error == D_GIF_ERR_READ_FAILED || rd.pos >= rd.size) throw truncated();
        throw InputError(std::string("cannot decode image: ") + (GifErrorString(gif->Error) ? GifErrorString(gif->Error) : "GIF error"));
      }
      std::memcpy(&idx[size_t(d.Top + y) * W + d.Left], line.data(), size_t(d.Width));
    }
  }
done:
  if (frames == 0) throw InputError(kUnrecognised);
  const size_t n = size_t(raw.w) * raw.h;
  if (!have_palette) {  // mode L: grey levels; transparency ignored by the conversion to RGB
    raw.mode = Mode::L;
    raw.px.swap(idx);
  } else if (transparency >= 0) {  // P with transparency -> RGBA
    raw.mode = Mode::RGBA;
    raw.px.resize(4 * n);
    for (size_t i = 0; i < n; ++i) {
      std::memcpy(&raw.px[4 * i], &pal[3 * idx[i]], 3);
      raw.px[4 * i + 3] = idx[i] == transparency ? 0 : 255;
    }
  } else {
    raw.mode = Mode::RGB;
    raw.px.resize(3 * n);
    for (size_t i = 0; i < n; ++i) std::memcpy(&raw.px[3 * i], &pal[3 * idx[i]], 3);
  }
  if (frames > 1) raw.notes.push_back("animated (" + std::to_string(frames) + " frames): scored the first frame");
  return raw;
}

// ---------------------------------------------------------------------------------------------
// orientation: EXIF tag 0x0112 of IFD0, else XMP tiff:Orientation (Pillow's Image.getexif)
// ---------------------------------------------------------------------------------------------
int exif_orientation(const std::string& exif_in) {
  std::string_view e(exif_in);
  if (e.size() >= 6 && e.substr(0, 6) == std::string_view("Exif\0\0", 6)) e.remove_prefix(6);
  if (e.size() < 8) return 0;
  bool le;
  if (e.substr(0, 2) == "II") le = true;
  else if (e.substr(0, 2) == "MM") le = false;
  else return 0;
  auto u16 = [&](size_t o) -> uint32_t {
    if (o + 2 > e.size()) return 0;
    auto a = uint8_t(e[o]), b = uint8_t(e[o + 1]);
    return le ? (a | (b << 8)) : ((a << 8) | b);
  };
  auto u32 = [&](size_t o) -> uint32_t {
    if (o + 4 > e.size()) return 0;
    uint32_t lo = u16(o), hi = u16(o + 2);
    return le ? (lo | (hi << 16)) : ((lo << 16) | hi);
  };
  uint32_t ifd = u32(4);
  if (ifd + 2 > e.size()) return 0;
  uint32_t n = u16(ifd);
  for (uint32_t i = 0; i < n; ++i) {
    size_t ent = ifd + 2 + 12 * size_t(i);
    if (ent + 12 > e.size()) break;
    if (u16(ent) != 0x0112) continue;
    uint32_t type = u16(ent + 2), count = u32(ent + 4);
    if (count != 1) return 0;
    if (type == 3) return int(u16(ent + 8));
    if (type == 4) return int(u32(ent + 8));
    return 0;
  }
  return 0;
}

int orientation_of(const Raw& raw) {
  int o = raw.exif.empty() ? 0 : exif_orientation(raw.exif);
  if (o == 0 && !raw.xmp.empty()) {
    static const std::regex re("tiff:Orientation(?:=\"|>)([0-9])");
    std::smatch m;
    if (std::regex_search(raw.xmp, m, re)) o = m[1].str()[0] - '0';
  }
  return o;
}

// out(x, y) = in(src(x, y)) for Pillow's Image.transpose methods chosen by ImageOps.exif_transpose
void apply_orientation(RgbImage& img, int o) {
  if (o < 2 || o > 8) return;
  const int W = img.width, H = img.height;
  const bool swap = o >= 5;
  const int OW = swap ? H : W, OH = swap ? W : H;
  std::vector<uint8_t> out(img.rgb.size());
  for (int y = 0; y < OH; ++y) {
    for (int x = 0; x < OW; ++x) {
      int sx = x, sy = y;
      switch (o) {
        case 2: sx = W - 1 - x; break;                  // FLIP_LEFT_RIGHT
        case 3: sx = W - 1 - x; sy = H - 1 - y; break;  // ROTATE_180
        case 4: sy = H - 1 - y; break;                  // FLIP_TOP_BOTTOM
        case 5: sx = y; sy = x; break;                  // TRANSPOSE
        case 6: sx = y; sy = H - 1 - x; break;          // ROTATE_270
        case 7: sx = W - 1 - y; sy = H - 1 - x; break;  // TRANSVERSE
        case 8: sx = W - 1 - y; sy = x; break;          // ROTATE_90
      }
      std::memcpy(&out[(size_t(y) * OW + x) * 3], &img.rgb[(size_t(sy) * W + sx) * 3], 3);
    }
  }
  img.rgb.swap(out);
  img.width = OW;
  img.height = OH;
}

// ---------------------------------------------------------------------------------------------
// to 8-bit RGB with Pillow's arithmetic (engine/images.py:_to_rgb)
// ---------------------------------------------------------------------------------------------
inline uint8_t over_white(uint32_t c, uint32_t a) {  // Image.alpha_composite(white, rgba), exact
  if (a == 0) return 255;
  uint32_t coef1 = a * 255 * 255 * 128 / (255 * 255);
  uint32_t coef2 = 255 * 128 - coef1;
  uint32_t tmp = c * coef1 + 255 * coef2 + (0x80 << 7);
  return uint8_t(((tmp >> 8) + tmp) >> 8 >> 7);
}

inline uint8_t muldiv255(int a, int b) {
  int tmp = a * b + 128;
  return uint8_t(((tmp >> 8) + tmp) >> 8);
}

RgbImage to_rgb(Raw& raw) {
  RgbImage img;
  img.width = raw.w;
  img.height = raw.h;
  const size_t n = size_t(raw.w) * raw.h;
  img.rgb.resize(3 * n);
  uint8_t* o = img.rgb.data();
  const uint8_t* p = raw.px.data();
  uint8_t amin = 255;
  switch (raw.mode) {
    case Mode::RGB: img.rgb.swap(raw.px); break;
    case Mode::L:
      for (size_t i = 0; i < n; ++i) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = p[i];
      break;
    case Mode::I16:  // np.round(v / 65535 * 255), half to even like numpy
      for (size_t i = 0; i < n; ++i) {
        double v = std::nearbyint(double(raw.px16[i]) / 65535.0 * 255.0);
        o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = uint8_t(std::clamp(v, 0.0, 255.0));
      }
      raw.notes.push_back("converted I;16 to 8-bit");
      break;
    case Mode::LA:
      for (size_t i = 0; i < n; ++i) {
        uint8_t a = p[2 * i + 1];
        amin = std::min(amin, a);
        o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = over_white(p[2 * i], a);
      }
      if (amin < 255) raw.notes.push_back("transparency composited onto white");
      break;
    case Mode::RGBA:
      for (size_t i = 0; i < n; ++i) {
        uint8_t a = p[4 * i + 3];
        amin = std::min(amin, a);
        for (int c = 0; c < 3; ++c) o[3 * i + c] = over_white(p[4 * i + c], a);
      }
      if (amin < 255) raw.notes.push_back("transparency composited onto white");
      break;
    case Mode::CMYK:
      for (size_t i = 0; i < n; ++i) {
        int nk = 255 - p[4 * i + 3];
        for (int c = 0; c < 3; ++c) o[3 * i + c] = uint8_t(std::clamp(nk - int(muldiv255(p[4 * i + c], nk)), 0, 255));
      }
      raw.notes.push_back("converted CMYK to RGB");
      break;
  }
  std::string note;
  for (auto& s : raw.notes) note += (note.empty() ? "" : "; ") + s;
  img.note = note;
  return img;
}

}  // namespace

RgbImage decode_image(const uint8_t* data, size_t size, int64_t max_pixels) {
  if (max_pixels <= 0) max_pixels = kDefaultMaxPixels;
  if (!data || size == 0) throw InputError("empty file (0 bytes)");
  auto starts = [&](const char* magic, size_t n, size_t at = 0) {
    return size >= at + n && std::memcmp(data + at, magic, n) == 0;
  };
  Raw raw;
  if (starts("\xFF\xD8\xFF", 3)) raw = decode_jpeg(data, size, max_pixels);
  else if (starts("\x89PNG\r\n\x1a\n", 8)) raw = decode_png(data, size, max_pixels);
  else if (starts("RIFF", 4) && starts("WEBP", 4, 8)) raw = decode_webp(data, size, max_pixels);
  else if (starts("GIF87a", 6) || starts("GIF89a", 6)) raw = decode_gif(data, size, max_pixels);
  else if (starts("BM", 2) || starts("II*\0", 4) ||
           starts("MM\0*", 4) || (size >= 2 && data[0] == 'P' && data[1] >= '1' && data[1] <= '7'))
    throw InputError("format not supported by the native decoder (JPEG, PNG, WebP and GIF are); "
                     "score it with the Python runtime");
  else throw InputError("not a recognised image format (corrupt or not an image)");
  int orientation = orientation_of(raw);
  RgbImage img = to_rgb(raw);
  apply_orientation(img, orientation);
  return img;
}

std::vector<uint8_t> read_file(const std::string& path, int64_t max_bytes) {
  if (max_bytes <= 0) max_bytes = kDefaultMaxBytes;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) throw InputError("file not found: " + path);
    if (errno == EACCES) throw InputError("permission denied: " + path);
    throw InputError("cannot read file: " + std::string(std::strerror(errno)) + ": " + path);
  }
  if (S_ISDIR(st.st_mode)) throw InputError("is a directory, not an image file: " + path);
  if (st.st_size == 0) throw InputError("empty file (0 bytes)");
  if (st.st_size > max_bytes)
    throw InputError("file too large: " + std::to_string(st.st_size) + " bytes > limit " + std::to_string(max_bytes));
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) {
    if (errno == EACCES) throw InputError("permission denied: " + path);
    throw InputError("cannot read file: " + std::string(std::strerror(errno)) + ": " + path);
  }
  std::vector<uint8_t> buf(size_t(st.st_size));
  size_t got = std::fread(buf.data(), 1, buf.size(), f.get());
  if (got != buf.size()) throw InputError("cannot read file: short read: " + path);
  return buf;
}

std::string sha256_hex(const uint8_t* data, size_t size) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(data, size, md, &len, EVP_sha256(), nullptr)) throw std::runtime_error("sha256 failed");
  static const char* hex = "0123456789abcdef";
  std::string s(2 * len, '0');
  for (unsigned i = 0; i < len; ++i) {
    s[2 * i] = hex[md[i] >> 4];
    s[2 * i + 1] = hex[md[i] & 15];
  }
  return s;
}

}  // namespace semgir
