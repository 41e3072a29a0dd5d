// Classify PNG images with a resnext-deploy model exported with --embed-preprocess.
//
//   node classify.js exported/demo-digits/model.preprocess.onnx a.png b.png [--top-k 3]
//
// The model takes uint8 RGB images [N, S, S, 3] and does scaling, normalisation and the layout
// change itself, so this program only decodes images. Resizing is the caller's job: images must
// already be S x S (S = the model's input_size metadata). Labels come from the model's metadata.
// Prints one JSON object per image: {"file", "top": [{"label", "index", "probability"}]}.
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');
const { PNG } = require('pngjs');
const { readMetadata } = require('./onnx-metadata');

function parseArgs(argv) {
  const args = { topK: 5, files: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--top-k') args.topK = Number(argv[++i]);
    else if (args.model === undefined) args.model = argv[i];
    else args.files.push(argv[i]);
  }
  if (!args.model || args.files.length === 0) {
    throw new Error('usage: node classify.js MODEL.onnx IMAGE.png [IMAGE.png ...] [--top-k K]');
  }
  return args;
}

function decodeRgb(file, size) {
  const png = PNG.sync.read(fs.readFileSync(file));
  if (png.width !== size || png.height !== size) {
    throw new Error(`${file}: ${png.width}x${png.height}, the model expects ${size}x${size}`);
  }
  const rgb = new Uint8Array(size * size * 3);
  for (let p = 0, q = 0; p < png.data.length; p += 4, q += 3) {
    rgb[q] = png.data[p];
    rgb[q + 1] = png.data[p + 1];
    rgb[q + 2] = png.data[p + 2];
  }
  return rgb;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const metadata = readMetadata(fs.readFileSync(args.model));
  if (!metadata.class_names || !metadata.input_size) {
    throw new Error(`${args.model} has no resnext-deploy metadata (class_names, input_size)`);
  }
  const labels = JSON.parse(metadata.class_names);
  const size = Number(metadata.input_size);
  const session = await ort.InferenceSession.create(args.model);
  if (!session.outputNames.includes('probabilities')) {
    throw new Error(`${args.model} has no 'probabilities' output: export it with --embed-preprocess`);
  }

  const pixels = new Uint8Array(args.files.length * size * size * 3);
  args.files.forEach((file, i) => pixels.set(decodeRgb(file, size), i * size * size * 3));
  const input = new ort.Tensor('uint8', pixels, [args.files.length, size, size, 3]);
  const output = await session.run({ [session.inputNames[0]]: input });
  const probs = output.probabilities.data;

  args.files.forEach((file, i) => {
    const row = Array.from(probs.subarray(i * labels.length, (i + 1) * labels.length));
    const top = row.map((p, index) => ({ label: labels[index], index, probability: p }))
      .sort((a, b) => b.probability - a.probability)
      .slice(0, args.topK);
    console.log(JSON.stringify({ file, top }));
  });
}

main().catch((err) => {
  console.error(`error: ${err.message}`);
  process.exit(1);
});
