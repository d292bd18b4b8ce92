// What the worst-case estimate needs to know of a media part without trusting anything else: an
// image's pixel size, an audio clip's duration, a PDF's page count, read from the bytes themselves.
// Each reader looks at as few bytes as it can (an image header, a WAV header) and answers `null` when
// the bytes do not say; the estimate then uses the provider's maximum.

/** A base64 payload as a data URL (`data:image/png;base64,...`) or bare base64, split into its parts. */
export interface InlineData {
  mimeType: string | null;
  /** The base64 text (not decoded). */
  base64: string;
}

const DATA_URL = /^data:([^;,]*)(?:;[^,]*)?;base64,/i;

/** Reads a `data:` URL; `null` for anything else (an http(s) URL, a file id). */
export function parseDataUrl(url: string): InlineData | null {
  const m = DATA_URL.exec(url.slice(0, 256));
  if (!m) return null;
  return { mimeType: m[1] ? m[1].toLowerCase() : null, base64: url.slice(m[0].length) };
}

/** Decoded size of a base64 text, in bytes, without decoding it. */
export function base64DecodedBytes(base64: string): number {
  let n = base64.length;
  while (n > 0 && (base64.charCodeAt(n - 1) === 61 || base64.charCodeAt(n - 1) <= 32)) n -= 1;
  return Math.floor((n * 3) / 4);
}

/** The first `bytes` bytes of a base64 text, decoded (base64 decodes in 4-character groups). */
function decodePrefix(base64: string, bytes: number): Buffer {
  const chars = Math.ceil(bytes / 3) * 4;
  return Buffer.from(base64.length > chars ? base64.slice(0, chars) : base64, 'base64');
}

export interface PixelSize {
  width: number;
  height: number;
}

/** A JPEG's size can sit after large EXIF/ICC segments; this is how far in we look for it. */
const JPEG_SCAN_BYTES = 256 * 1024;

/**
 * Pixel size of a PNG, JPEG, GIF or WebP image from its header, or `null` when the bytes are none of
 * those (or cut before the size).
 */
export function imageSize(base64: string): PixelSize | null {
  const head = decodePrefix(base64, 32);
  if (
    head.length >= 24 &&
    head.readUInt32BE(0) === 0x89504e47 &&
    head.toString('latin1', 12, 16) === 'IHDR'
  ) {
    return positive(head.readUInt32BE(16), head.readUInt32BE(20));
  }
  if (head.length >= 10 && head.toString('latin1', 0, 4) === 'GIF8') {
    return positive(head.readUInt16LE(6), head.readUInt16LE(8));
  }
  if (
    head.length >= 30 &&
    head.toString('latin1', 0, 4) === 'RIFF' &&
    head.toString('latin1', 8, 12) === 'WEBP'
  ) {
    const chunk = head.toString('latin1', 12, 16);
    if (chunk === 'VP8 ') return positive(head.readUInt16LE(26) & 0x3fff, head.readUInt16LE(28) & 0x3fff);
    if (chunk === 'VP8L') {
      const bits = head.readUInt32LE(21);
      return positive((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1);
    }
    if (chunk === 'VP8X') return positive(head.readUIntLE(24, 3) + 1, head.readUIntLE(27, 3) + 1);
    return null;
  }
  if (head.length >= 4 && head[0] === 0xff && head[1] === 0xd8)
    return jpegSize(decodePrefix(base64, JPEG_SCAN_BYTES));
  return null;
}

/** Walks JPEG segments to the first start-of-frame marker (SOF0..SOF15 but DHT, JPG and DAC). */
function jpegSize(bytes: Buffer): PixelSize | null {
  let i = 2;
  while (i + 9 < bytes.length) {
    if (bytes[i] !== 0xff) return null;
    const marker = bytes[i + 1]!;
    if (marker === 0xff) {
      i += 1; // fill byte
      continue;
    }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      i += 2; // markers without a length
      continue;
    }
    const length = bytes.readUInt16BE(i + 2);
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      return positive(bytes.readUInt16BE(i + 7), bytes.readUInt16BE(i + 5));
    }
    if (length < 2) return null;
    i += 2 + length;
  }
  return null;
}

function positive(width: number, height: number): PixelSize | null {
  return width > 0 && height > 0 ? { width, height } : null;
}

/**
 * Duration in seconds of a WAV (RIFF/WAVE) clip from its header: the `data` chunk's size over the
 * `fmt ` chunk's byte rate. `null` when the bytes are not a WAV with both.
 */
export function wavSeconds(base64: string): number | null {
  const bytes = decodePrefix(base64, 4096);
  if (
    bytes.length < 12 ||
    bytes.toString('latin1', 0, 4) !== 'RIFF' ||
    bytes.toString('latin1', 8, 12) !== 'WAVE'
  ) {
    return null;
  }
  let byteRate = 0;
  let i = 12;
  while (i + 8 <= bytes.length) {
    const id = bytes.toString('latin1', i, i + 4);
    const size = bytes.readUInt32LE(i + 4);
    if (id === 'fmt ' && size >= 12 && i + 20 <= bytes.length) byteRate = bytes.readUInt32LE(i + 16); // its 8..11
    if (id === 'data') {
      if (byteRate <= 0) return null;
      // A streamed WAV may declare 0 or 0xFFFFFFFF: take what is actually there.
      const present = base64DecodedBytes(base64) - (i + 8);
      const dataBytes = size === 0 || size === 0xffffffff ? present : Math.min(size, present);
      return Math.max(0, dataBytes) / byteRate;
    }
    i += 8 + size + (size & 1);
  }
  return null;
}

const PAGE_OBJECT = /\/Type\s*\/Page(?![a-zA-Z])/g;
const PAGE_COUNT = /\/Count\s+(\d{1,9})/g;

/**
 * Pages of a PDF: the larger of its `/Type /Page` objects (not `/Pages`) and the largest `/Count` of a
 * page tree node. Decodes the whole file. `null` when it is not a PDF, says nothing, or keeps objects in
 * compressed object streams (`/ObjStm`), where pages cannot be seen without inflating them: the estimate
 * then takes the model's whole context window.
 */
export function pdfPages(base64: string): number | null {
  const bytes = Buffer.from(base64, 'base64');
  if (bytes.length < 5 || bytes.toString('latin1', 0, 5) !== '%PDF-') return null;
  const text = bytes.toString('latin1');
  if (text.includes('/ObjStm')) return null;
  let pages = text.match(PAGE_OBJECT)?.length ?? 0;
  for (const m of text.matchAll(PAGE_COUNT)) pages = Math.max(pages, Number(m[1]));
  return pages > 0 ? pages : null;
}
