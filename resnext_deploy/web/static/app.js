// The page: load model.json and the model, then classify each image the visitor picks or drops,
// entirely in this tab. `?selftest=a.png,b.jpg` classifies those files (relative to the page) and
// writes the results as JSON into #selftest-result and POSTs them to `__selftest__`.
import { FORMAT_NAMES, HEADER_BYTES, readImageHeader } from "./imageheader.js";
import { normalize, resizeAndCrop, undoOrientation } from "./preprocess.js";

const TOP_K = 5;
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

/** A problem with the visitor's file or the site, shown as its message alone. */
class PageError extends Error {}

async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new PageError(`could not fetch ${what} (${error.message})`);
  }
  if (!response.ok) throw new PageError(`could not fetch ${what} (HTTP ${response.status})`);
  return response;
}

async function sha256Hex(bytes) {
  if (!globalThis.crypto?.subtle) return null; // only in a secure context (https, localhost)
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// The model file must be the one model.json describes: the page shows its hash as its identity.
async function fetchModel(meta) {
  const bytes = new Uint8Array(await (await fetchOk(meta.model, meta.model)).arrayBuffer());
  const sha256 = await sha256Hex(bytes);
  if (bytes.length !== meta.bytes || (sha256 !== null && sha256 !== meta.sha256)) {
    throw new PageError(`${meta.model} does not match model.json (another build?); rebuild the site`);
  }
  return { bytes, verified: sha256 !== null };
}

async function createSession(ort, bytes) {
  const wantGpu = "gpu" in navigator && params.get("engine") !== "wasm";
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: wantGpu ? ["webgpu", "wasm"] : ["wasm"],
  });
  // onnxruntime-web drops an execution provider it cannot start; WebGPU started if it made a device.
  const engine = Object.hasOwn(ort.env.webgpu, "device") ? "webgpu" : "wasm";
  return { session, engine };
}

async function loadClassifier() {
  const meta = await (await fetchOk("model.json", "model.json")).json();
  const ort = await import(new URL(meta.ort.script, location.href).href);
  ort.env.wasm.wasmPaths = {
    mjs: new URL(meta.ort.wasm.mjs, location.href).href,
    wasm: new URL(meta.ort.wasm.wasm, location.href).href,
  };
  // Threads need SharedArrayBuffer, which a plain static server (no COOP/COEP headers) withholds.
  const cores = navigator.hardwareConcurrency || 1;
  ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.min(cores, 4) : 1;
  const model = await fetchModel(meta);
  const { session, engine } = await createSession(ort, model.bytes);
  return { ort, meta, session, engine, verified: model.verified };
}

// Refuse what the header says would be unsafe or unreadable, before the browser decodes anything.
async function checkHeader(blob, maxPixels) {
  const header = readImageHeader(new Uint8Array(await blob.slice(0, HEADER_BYTES).arrayBuffer()));
  if (header === null) throw new PageError(`not a readable image (the page reads ${FORMAT_NAMES})`);
  const pixels = header.width * header.height;
  if (pixels > maxPixels) {
    throw new PageError(
      `too many pixels to decode safely, a possible decompression bomb (${header.format} of ` +
        `${header.width}x${header.height} = ${pixels} pixels, the limit is ${maxPixels})`,
    );
  }
  if (pixels === 0) throw new PageError(`an empty ${header.width}x${header.height} image`);
  return header;
}

// uint8 RGB as Pillow's convert("RGB") gives it: no colour management, alpha dropped, and the
// pixels as stored (browsers turn an image by its EXIF orientation, Pillow does not).
async function decodeRgb(blob, header) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { premultiplyAlpha: "none", colorSpaceConversion: "none" });
  } catch {
    throw new PageError("not a readable image (the browser could not decode it)");
  }
  try {
    const { width, height } = bitmap;
    const canvas = new OffscreenCanvas(width, height);
    const context = canvas.getContext("2d", { colorSpace: "srgb", willReadFrequently: true });
    if (context === null) throw new PageError(`too large for this browser to read (${width}x${height})`);
    context.drawImage(bitmap, 0, 0);
    const rgba = context.getImageData(0, 0, width, height, { colorSpace: "srgb" }).data;
    const rgb = new Uint8Array(width * height * 3);
    for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
      rgb[j] = rgba[i];
      rgb[j + 1] = rgba[i + 1];
      rgb[j + 2] = rgba[i + 2];
    }
    // A browser that ignores the orientation leaves a quarter turn's size unswapped.
    const applied = !(header.orientation >= 5 && width === header.width && height === header.height);
    const stored = applied ? undoOrientation(rgb, width, height, header.orientation) : { rgb, width, height };
    if (stored.width !== header.width || stored.height !== header.height) {
      throw new PageError(
        `the browser decoded ${width}x${height} pixels from a ${header.format} header that says ` +
          `${header.width}x${header.height}`,
      );
    }
    return stored;
  } finally {
    bitmap.close();
  }
}

function inputTensor(ort, meta, crop) {
  const size = meta.input_size;
  if (meta.input_format === "uint8-nhwc") return new ort.Tensor("uint8", crop, [1, size, size, 3]);
  return new ort.Tensor("float32", normalize(crop, size, meta.mean, meta.std), [1, 3, size, size]);
}

// Softmax in float64, as predict computes it.
function softmax(logits) {
  const max = Math.max(...logits);
  const exps = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

/** The `k` most probable classes: probability descending, ties by index ascending. */
function topK(probabilities, labels, k) {
  const order = probabilities.map((_, i) => i);
  order.sort((a, b) => probabilities[b] - probabilities[a] || a - b);
  const indices = order.slice(0, Math.min(k, probabilities.length));
  return {
    indices,
    labels: indices.map((i) => labels[i]),
    probabilities: indices.map((i) => probabilities[i]),
  };
}

/** Classify one image file: the path a chosen, a dropped and a self-test file all take. */
async function classify(classifier, blob) {
  const { ort, meta, session } = classifier;
  const start = performance.now();
  const header = await checkHeader(blob, meta.max_pixels);
  const { rgb, width, height } = await decodeRgb(blob, header);
  const crop = resizeAndCrop(rgb, width, height, meta.resize, meta.input_size);
  const feeds = { [meta.input_name]: inputTensor(ort, meta, crop) };
  const inferStart = performance.now();
  const outputs = await session.run(feeds);
  const inferMs = performance.now() - inferStart;
  const probabilities = meta.probabilities_name
    ? Array.from(outputs[meta.probabilities_name].data, Number)
    : softmax(outputs[meta.output_name].data);
  return { ...topK(probabilities, meta.labels, TOP_K), crop, inferMs, totalMs: performance.now() - start };
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = message === null;
}

function showResult(name, blob, result, size) {
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(blob); // decoded by the browser only after the header check
  preview.alt = name;
  $("file-name").textContent = name;
  const input = $("model-input");
  input.width = input.height = size;
  const pixels = new ImageData(size, size);
  for (let i = 0, j = 0; j < result.crop.length; i += 4, j += 3) {
    pixels.data.set([result.crop[j], result.crop[j + 1], result.crop[j + 2], 255], i);
  }
  input.getContext("2d").putImageData(pixels, 0, 0);
  const rows = result.labels.map((label, r) => {
    const row = document.createElement("tr");
    for (const text of [String(r + 1), label, `${(result.probabilities[r] * 100).toFixed(2)} %`]) {
      row.append(Object.assign(document.createElement("td"), { textContent: text }));
    }
    return row;
  });
  $("top").tBodies[0].replaceChildren(...rows);
  $("timing").textContent =
    `inference ${result.inferMs.toFixed(1)} ms, ` +
    `total ${result.totalMs.toFixed(1)} ms (decode, resize, inference)`;
  $("result").hidden = false;
}

function describeModel({ meta, engine, verified, ort }) {
  const mb = (meta.bytes / 1e6).toFixed(1);
  const hash = `sha256 ${meta.sha256.slice(0, 12)}${verified ? "" : " (not verified: not a secure context)"}`;
  $("status").textContent = `Ready: ${meta.arch}, ${meta.labels.length} classes.`;
  $("model-note").textContent =
    `${meta.arch} · ${meta.variant} · ${mb} MB · ${hash} · engine ${engine} · ` +
    `onnxruntime-web ${ort.env.versions?.web ?? meta.onnxruntime_web}`;
}

function messageOf(error) {
  return error instanceof PageError ? error.message : `unexpected error: ${error?.message ?? error}`;
}

function wireInputs(classifier) {
  let queue = Promise.resolve(); // one image at a time: a session runs one call at once
  const handle = (file) => {
    if (!file) return;
    queue = queue.then(async () => {
      showError(null);
      try {
        showResult(file.name, file, await classify(classifier, file), classifier.meta.input_size);
      } catch (error) {
        $("result").hidden = true;
        showError(`${file.name}: ${messageOf(error)}`);
      }
    });
  };
  const picker = $("file");
  picker.disabled = false;
  picker.addEventListener("change", () => {
    handle(picker.files[0]);
    picker.value = ""; // choosing the same file again classifies it again
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    handle(event.dataTransfer.files[0]);
  });
}

async function selfTest(classifier, urls) {
  const results = [];
  for (const url of urls) {
    const entry = { file: url, labels: [], indices: [], probabilities: [], error: null, infer_ms: null };
    try {
      const blob = await (await fetchOk(url, url)).blob();
      const result = await classify(classifier, blob);
      if (results.length === urls.length - 1) showResult(url, blob, result, classifier.meta.input_size);
      Object.assign(entry, {
        labels: result.labels,
        indices: result.indices,
        probabilities: result.probabilities,
        infer_ms: result.inferMs,
      });
    } catch (error) {
      entry.error = messageOf(error);
    }
    results.push(entry);
  }
  return results;
}

async function reportSelfTest(report) {
  const json = JSON.stringify(report);
  const pre = $("selftest-result");
  pre.textContent = json;
  pre.hidden = false;
  try {
    const headers = { "Content-Type": "application/json" };
    await fetch("__selftest__", { method: "POST", body: json, headers });
  } catch {
    // the page's own server need not accept it
  }
}

async function main() {
  const selftest = params.get("selftest");
  let classifier;
  try {
    classifier = await loadClassifier();
  } catch (error) {
    $("status").textContent = `The model could not be loaded: ${messageOf(error)}`;
    if (selftest !== null) await reportSelfTest({ engine: null, error: messageOf(error), results: [] });
    return;
  }
  describeModel(classifier);
  wireInputs(classifier);
  if (selftest !== null) {
    const urls = selftest.split(",").filter((u) => u !== "");
    const { engine, meta, verified } = classifier;
    const results = await selfTest(classifier, urls);
    const { sha256, variant } = meta;
    await reportSelfTest({ engine, sha256, sha256_verified: verified, variant, results });
  }
}

main();
