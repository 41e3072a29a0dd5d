// An image's format and declared size, read from its first bytes without decoding it: the page
// refuses a decompression bomb (a small file declaring billions of pixels) before the browser
// allocates anything, as `resnext-deploy predict` does with Pillow's limit.

/** The first bytes a header needs: JPEG's size marker can follow long EXIF/ICC segments. */
export const HEADER_BYTES = 1 << 20;

const u16be = (b, i) => (b[i] << 8) | b[i + 1];
const u16le = (b, i) => b[i] | (b[i + 1] << 8);
const u24le = (b, i) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16);
const u32be = (b, i) => ((b[i] << 24) >>> 0) + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);
const i32le = (b, i) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);
const ascii = (b, i, n) => String.fromCharCode(...b.subarray(i, i + n));

function png(b) {
  if (b.length < 24 || ascii(b, 12, 4) !== "IHDR") return null;
  return { format: "PNG", width: u32be(b, 16), height: u32be(b, 20) };
}

// EXIF orientation (tag 0x0112 of IFD0) from an APP1 "Exif" segment's body; 1 when absent.
function exifOrientation(b, start, end) {
  if (end - start < 14 || ascii(b, start, 6) !== "Exif\0\0") return 1;
  const tiff = start + 6;
  const little = ascii(b, tiff, 2) === "II";
  const u16 = (i) => (little ? u16le(b, i) : u16be(b, i));
  const u32 = (i) => (little ? (u16le(b, i) + u16le(b, i + 2) * 65536) : u32be(b, i));
  const ifd = tiff + u32(tiff + 4);
  if (ifd + 2 > end) return 1;
  for (let n = u16(ifd), e = ifd + 2; n > 0 && e + 12 <= end; n--, e += 12) {
    if (u16(e) === 0x0112) {
      const value = u16(e + 8);
      return value >= 1 && value <= 8 ? value : 1;
    }
  }
  return 1;
}

// Walks the marker segments up to the first start-of-frame (SOF0..SOF15 but DHT, JPG and DAC).
function jpeg(b) {
  let i = 2;
  let orientation = 1;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) return null;
    const marker = b[i + 1];
    if (marker === 0xff) { i += 1; continue; } // fill byte
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) { i += 2; continue; } // no length
    const length = u16be(b, i + 2);
    const isFrame = marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
    if (isFrame) {
      if (i + 9 > b.length) return null;
      return { format: "JPEG", width: u16be(b, i + 7), height: u16be(b, i + 5), orientation };
    }
    if (marker === 0xe1 && orientation === 1) {
      orientation = exifOrientation(b, i + 4, Math.min(i + 2 + length, b.length));
    }
    if (marker === 0xd9 || marker === 0xda || length < 2) return null; // image data before a frame
    i += 2 + length;
  }
  return null;
}

function gif(b) {
  if (b.length < 10) return null;
  return { format: "GIF", width: u16le(b, 6), height: u16le(b, 8) };
}

function bmp(b) {
  if (b.length < 26) return null;
  const dib = b[14] | (b[15] << 8) | (b[16] << 16) | (b[17] << 24);
  if (dib === 12) return { format: "BMP", width: u16le(b, 18), height: u16le(b, 20) };
  return { format: "BMP", width: Math.abs(i32le(b, 18)), height: Math.abs(i32le(b, 22)) };
}

function webp(b) {
  if (b.length < 30) return null;
  const chunk = ascii(b, 12, 4);
  if (chunk === "VP8X") return { format: "WebP", width: u24le(b, 24) + 1, height: u24le(b, 27) + 1 };
  if (chunk === "VP8L" && b[20] === 0x2f) {
    const bits = (b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24)) >>> 0;
    return { format: "WebP", width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
  }
  if (chunk === "VP8 ") {
    return { format: "WebP", width: u16le(b, 26) & 0x3fff, height: u16le(b, 28) & 0x3fff };
  }
  return null;
}

const FORMATS = [
  { magic: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], read: png },
  { magic: [0xff, 0xd8], read: jpeg },
  { magic: [0x47, 0x49, 0x46, 0x38], read: gif }, // "GIF8"
  { magic: [0x42, 0x4d], read: bmp }, // "BM"
  { magic: [0x52, 0x49, 0x46, 0x46], read: (b) => (ascii(b, 8, 4) === "WEBP" ? webp(b) : null) },
];

export const FORMAT_NAMES = "PNG, JPEG, GIF, WebP or BMP";

/** `{format, width, height, orientation}` from the header bytes of a PNG, JPEG, GIF, WebP or BMP
 * file (`orientation`: a JPEG's EXIF orientation, 1 otherwise); `null` for anything else or a
 * header cut short (the caller refuses to decode those). */
export function readImageHeader(bytes) {
  for (const { magic, read } of FORMATS) {
    if (bytes.length >= magic.length && magic.every((v, i) => bytes[i] === v)) {
      const header = read(bytes);
      return header && { orientation: 1, ...header };
    }
  }
  return null;
}
