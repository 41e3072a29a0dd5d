// The model's preprocessing, pixel for pixel as `resnext-deploy predict` does it (Pillow's
// bilinear resize, torchvision's centre crop, numpy's float32 normalisation). Pure functions over
// packed RGB bytes, so that Node can check them against Pillow without a browser.

const PRECISION_BITS = 32 - 8 - 2; // Pillow's fixed point for 8-bit images
const BILINEAR_SUPPORT = 1.0;

/** `[width, height]` after torchvision's `Resize(size)`: the shorter side becomes `size`, the
 * longer `trunc(size * long / short)`. */
export function resizedSize(width, height, size) {
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  if (short < 1) throw new Error(`cannot resize an empty ${width}x${height} image`);
  const newLong = Math.trunc((size * long) / short);
  return width <= height ? [size, newLong] : [newLong, size];
}

function bilinear(x) {
  if (x < 0) x = -x;
  return x < 1 ? 1 - x : 0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output index the first input index,
// the number of taps, and the taps as integers scaled by 2^PRECISION_BITS.
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1); // antialias: widen the filter when shrinking
  const support = BILINEAR_SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const invFilterscale = 1 / filterscale;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const taps = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      taps[x] = bilinear((x + xmin - center + 0.5) * invFilterscale);
      ww += taps[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? taps[x] / ww : taps[x];
      const scaled = k * (1 << PRECISION_BITS);
      weights[xx * ksize + x] = Math.trunc(scaled < 0 ? scaled - 0.5 : scaled + 0.5);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, weights, ksize };
}

function clip8(sum) {
  const v = sum >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// Pillow's ImagingResampleHorizontal_8bpc on input rows [first, first + height).
function horizontal(src, width, first, height, outWidth, c) {
  const out = new Uint8Array(outWidth * height * 3);
  const half = 1 << (PRECISION_BITS - 1);
  for (let y = 0; y < height; y++) {
    const row = (y + first) * width * 3;
    for (let xx = 0; xx < outWidth; xx++) {
      const xmin = c.bounds[xx * 2];
      const xmax = c.bounds[xx * 2 + 1];
      const k = xx * c.ksize;
      let s0 = half, s1 = half, s2 = half;
      for (let x = 0; x < xmax; x++) {
        const p = row + (x + xmin) * 3;
        const w = c.weights[k + x];
        s0 += src[p] * w;
        s1 += src[p + 1] * w;
        s2 += src[p + 2] * w;
      }
      const o = (y * outWidth + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}

// Pillow's ImagingResampleVertical_8bpc; `shift` is subtracted from every first row index.
function vertical(src, width, outHeight, c, shift) {
  const out = new Uint8Array(width * outHeight * 3);
  const half = 1 << (PRECISION_BITS - 1);
  const stride = width * 3;
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = c.bounds[yy * 2] - shift;
    const ymax = c.bounds[yy * 2 + 1];
    const k = yy * c.ksize;
    for (let xx = 0; xx < width; xx++) {
      let s0 = half, s1 = half, s2 = half;
      for (let y = 0; y < ymax; y++) {
        const p = (y + ymin) * stride + xx * 3;
        const w = c.weights[k + y];
        s0 += src[p] * w;
        s1 += src[p + 1] * w;
        s2 += src[p + 2] * w;
      }
      const o = (yy * width + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}

/** `PIL.Image.resize((outWidth, outHeight), Image.Resampling.BILINEAR)` on packed RGB bytes,
 * byte for byte: the same two separable passes, in the order Pillow's ImagingResampleInner picks
 * (each pass rounds to 8 bits, so the order changes the result). Returns packed RGB bytes. */
export function resizeBilinear(rgb, width, height, outWidth, outHeight) {
  const needHorizontal = outWidth !== width;
  const needVertical = outHeight !== height;
  // Pillow runs the vertical pass first when the height shrinks over twice as much as the width.
  const horizontalFirst = !(height - outHeight > 0 && height - outHeight > (width - outWidth) * 2);
  const cv = needVertical || (needHorizontal && horizontalFirst) ? coefficients(height, outHeight) : null;
  let image = rgb;
  let w = width;
  if (horizontalFirst) {
    let shift = 0;
    if (needHorizontal) {
      // Only the input rows the vertical pass reads are resampled horizontally.
      const first = cv.bounds[0];
      const last = cv.bounds[outHeight * 2 - 2] + cv.bounds[outHeight * 2 - 1];
      image = horizontal(image, w, first, last - first, outWidth, coefficients(width, outWidth));
      w = outWidth;
      shift = first;
    }
    if (needVertical) image = vertical(image, w, outHeight, cv, shift);
  } else {
    if (needVertical) image = vertical(image, w, outHeight, cv, 0);
    if (needHorizontal) image = horizontal(image, w, 0, outHeight, outWidth, coefficients(width, outWidth));
  }
  return image === rgb ? rgb.slice() : image;
}

// Python's round() on a half-integer or integer: ties go to the even neighbour.
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** torchvision's `CenterCrop(size)` on packed RGB bytes: a side shorter than `size` is zero-padded
 * first (the odd pixel right/bottom), the crop starts at `round((side - size) / 2)`. */
export function centerCrop(rgb, width, height, size) {
  const padLeft = Math.floor(Math.max(size - width, 0) / 2);
  const padTop = Math.floor(Math.max(size - height, 0) / 2);
  const paddedWidth = Math.max(width, size);
  const paddedHeight = Math.max(height, size);
  const left = roundHalfEven((paddedWidth - size) / 2) - padLeft;
  const top = roundHalfEven((paddedHeight - size) / 2) - padTop;
  const out = new Uint8Array(size * size * 3); // zeros where the crop falls in the padding
  for (let y = 0; y < size; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= height) continue;
    for (let x = 0; x < size; x++) {
      const sx = x + left;
      if (sx < 0 || sx >= width) continue;
      const s = (sy * width + sx) * 3;
      const o = (y * size + x) * 3;
      out[o] = rgb[s];
      out[o + 1] = rgb[s + 1];
      out[o + 2] = rgb[s + 2];
    }
  }
  return out;
}

/** RGB of any size -> the model's `size x size` RGB bytes: resize so the shorter side is
 * `resize`, then centre crop `size`. */
export function resizeAndCrop(rgb, width, height, resize, size) {
  const [w, h] = resizedSize(width, height, resize);
  const resized = w === width && h === height ? rgb : resizeBilinear(rgb, width, height, w, h);
  return centerCrop(resized, w, h, size);
}

/** Packed `size x size` RGB bytes -> float32 NCHW `(v / 255 - mean[c]) / std[c]`, rounded to
 * float32 after each step as numpy computes it in float32. */
export function normalize(rgb, size, mean, std) {
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  const m = mean.map(Math.fround);
  const s = std.map(Math.fround);
  const f255 = Math.fround(255);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const scaled = Math.fround(rgb[i * 3 + c] / f255);
      out[c * plane + i] = Math.fround(Math.fround(scaled - m[c]) / s[c]);
    }
  }
  return out;
}

/** The stored pixels of an image the browser displayed rotated or flipped by its EXIF
 * `orientation` (1..8): browsers apply it when decoding, Pillow (and so predict) does not.
 * `rgb` is the displayed `width x height` image; returns `{rgb, width, height}` as stored. */
export function undoOrientation(rgb, width, height, orientation) {
  if (orientation === 1) return { rgb, width, height };
  const swapped = orientation >= 5;
  const [w, h] = swapped ? [height, width] : [width, height]; // the stored size
  // Where stored pixel (x, y) is in the displayed image.
  const displayed = [
    null,
    null,
    (x, y) => [w - 1 - x, y],
    (x, y) => [w - 1 - x, h - 1 - y],
    (x, y) => [x, h - 1 - y],
    (x, y) => [y, x],
    (x, y) => [h - 1 - y, x],
    (x, y) => [h - 1 - y, w - 1 - x],
    (x, y) => [y, w - 1 - x],
  ][orientation];
  const out = new Uint8Array(rgb.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [dx, dy] = displayed(x, y);
      const s = (dy * width + dx) * 3;
      const o = (y * w + x) * 3;
      out[o] = rgb[s];
      out[o + 1] = rgb[s + 1];
      out[o + 2] = rgb[s + 2];
    }
  }
  return { rgb: out, width: w, height: h };
}
