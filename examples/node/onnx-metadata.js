// Read an ONNX model's metadata_props without a protobuf library.
//
// ModelProto is a protobuf message; metadata_props is its field 14, a repeated
// StringStringEntryProto {key = 1, value = 2}. We walk the top-level fields and
// skip everything else (the graph included) by its length prefix.
'use strict';

function readVarint(buf, pos) {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    if (pos >= buf.length) throw new Error('truncated ONNX file (varint)');
    const byte = buf[pos++];
    result |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [result, pos];
    shift += 7n;
  }
}

function skipField(buf, pos, wireType) {
  switch (wireType) {
    case 0: return readVarint(buf, pos)[1];
    case 1: return pos + 8;
    case 2: {
      const [len, next] = readVarint(buf, pos);
      return next + Number(len);
    }
    case 5: return pos + 4;
    default: throw new Error(`unsupported protobuf wire type ${wireType}`);
  }
}

function parseEntry(buf) {
  const entry = { key: '', value: '' };
  let pos = 0;
  while (pos < buf.length) {
    const [tag, next] = readVarint(buf, pos);
    const field = Number(tag >> 3n);
    const wireType = Number(tag & 7n);
    if (wireType === 2 && (field === 1 || field === 2)) {
      const [len, start] = readVarint(buf, next);
      const text = buf.subarray(start, start + Number(len)).toString('utf8');
      if (field === 1) entry.key = text; else entry.value = text;
      pos = start + Number(len);
    } else {
      pos = skipField(buf, next, wireType);
    }
  }
  return entry;
}

// Returns {key: value} for every metadata_props entry of the model in `buf`.
function readMetadata(buf) {
  const metadata = {};
  let pos = 0;
  while (pos < buf.length) {
    const [tag, next] = readVarint(buf, pos);
    const field = Number(tag >> 3n);
    const wireType = Number(tag & 7n);
    if (field === 14 && wireType === 2) {
      const [len, start] = readVarint(buf, next);
      const { key, value } = parseEntry(buf.subarray(start, start + Number(len)));
      metadata[key] = value;
      pos = start + Number(len);
    } else {
      pos = skipField(buf, next, wireType);
    }
  }
  return metadata;
}

module.exports = { readMetadata };
