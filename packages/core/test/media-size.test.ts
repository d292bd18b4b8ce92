// The media readers of the worst-case bound (src/admission/media-size.ts), against bytes built by hand
// from each format's published layout (PNG IHDR, GIF logical screen, WebP VP8/VP8L/VP8X, JPEG SOFn,
// RIFF/WAVE chunks, PDF page objects). Every expected value is read off the bytes the test wrote.
import { describe, expect, it } from 'vitest';
import {
  base64DecodedBytes,
  imageSize,
  parseDataUrl,
  pdfPages,
  wavSeconds,
} from '../src/admission/media-size.js';

const b64 = (bytes: Buffer | number[]) => Buffer.from(bytes).toString('base64');
const ascii = (s: string) => [...Buffer.from(s, 'latin1')];

describe('parseDataUrl', () => {
  it('splits a data URL into its lower-cased MIME type and the base64 text', () => {
    expect(parseDataUrl('data:Image/PNG;base64,AAAA')).toEqual({ mimeType: 'image/png', base64: 'AAAA' });
    expect(parseDataUrl('data:audio/wav;name=a.wav;base64,UklG')).toEqual({
      mimeType: 'audio/wav',
      base64: 'UklG',
    });
    expect(parseDataUrl('DATA:;base64,QUJD')).toEqual({ mimeType: null, base64: 'QUJD' });
  });

  it('is null for what is not a base64 data URL', () => {
    expect(parseDataUrl('https://example.com/a.png')).toBeNull();
    expect(parseDataUrl('data:text/plain,hello')).toBeNull();
    expect(parseDataUrl('file-abc123')).toBeNull();
    // The header is looked for in the first 256 characters only.
    expect(parseDataUrl(`data:image/png;x=${'a'.repeat(300)};base64,AAAA`)).toBeNull();
  });
});

describe('base64DecodedBytes', () => {
  it.each([
    ['', 0],
    ['QQ==', 1],
    ['QUI=', 2],
    ['QUJD', 3],
    ['QUJDRA==', 4],
    ['QUJD\n', 3], // trailing whitespace is not data
    ['QUI= \r\n', 2],
  ])('%j decodes to %i bytes', (text, bytes) => {
    expect(base64DecodedBytes(text)).toBe(bytes);
  });
});

describe('imageSize', () => {
  it('PNG: width and height from IHDR', () => {
    const png = Buffer.alloc(33);
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(png, 0);
    png.writeUInt32BE(13, 8);
    png.write('IHDR', 12, 'latin1');
    png.writeUInt32BE(3000, 16);
    png.writeUInt32BE(7, 20);
    expect(imageSize(b64(png))).toEqual({ width: 3000, height: 7 });
    // Cut before the height: no size.
    expect(imageSize(b64(png.subarray(0, 23)))).toBeNull();
    // A zero width is no size.
    png.writeUInt32BE(0, 16);
    expect(imageSize(b64(png))).toBeNull();
    // Not IHDR first.
    png.writeUInt32BE(3000, 16);
    png.write('IDAT', 12, 'latin1');
    expect(imageSize(b64(png))).toBeNull();
  });

  it('GIF: the logical screen size, little-endian', () => {
    // "GIF89a", width 0x0102 = 258, height 0x0304 = 772
    expect(imageSize(b64([...ascii('GIF89a'), 0x02, 0x01, 0x04, 0x03, 0, 0, 0]))).toEqual({
      width: 258,
      height: 772,
    });
    expect(imageSize(b64([...ascii('GIF87a'), 0x10, 0x00, 0x20]))).toBeNull(); // 9 bytes: cut
  });

  /** A RIFF/WEBP file of 30 bytes with `chunk` at 12 and `fill` writing its size fields. */
  function webp(chunk: string, fill: (b: Buffer) => void): string {
    const b = Buffer.alloc(30);
    b.write('RIFF', 0, 'latin1');
    b.writeUInt32LE(22, 4);
    b.write('WEBP', 8, 'latin1');
    b.write(chunk, 12, 'latin1');
    fill(b);
    return b64(b);
  }

  it('WebP: lossy (VP8), lossless (VP8L) and extended (VP8X) headers', () => {
    // VP8: 14-bit width at 26, height at 28; the top two bits are the scale, not the size.
    expect(
      imageSize(
        webp('VP8 ', (b) => {
          b.writeUInt16LE(0xc000 | 640, 26);
          b.writeUInt16LE(0x4000 | 480, 28);
        }),
      ),
    ).toEqual({ width: 640, height: 480 });
    // VP8L: after the 0x2f signature at 20, 14 bits of width - 1 then 14 bits of height - 1.
    expect(
      imageSize(
        webp('VP8L', (b) => {
          b[20] = 0x2f;
          b.writeUInt32LE(((300 - 1) | ((200 - 1) << 14)) >>> 0, 21);
        }),
      ),
    ).toEqual({ width: 300, height: 200 });
    // VP8X: 24-bit canvas width - 1 at 24 and height - 1 at 27.
    expect(
      imageSize(
        webp('VP8X', (b) => {
          b.writeUIntLE(4000 - 1, 24, 3);
          b.writeUIntLE(70_000 - 1, 27, 3);
        }),
      ),
    ).toEqual({ width: 4000, height: 70_000 });
    expect(imageSize(webp('ALPH', () => {}))).toBeNull();
  });

  /** SOFn segment: marker, length 17, precision, height, width (big-endian), then components. */
  function sof(marker: number, width: number, height: number): number[] {
    const s = Buffer.alloc(19);
    s[0] = 0xff;
    s[1] = marker;
    s.writeUInt16BE(17, 2);
    s[4] = 8;
    s.writeUInt16BE(height, 5);
    s.writeUInt16BE(width, 7);
    return [...s];
  }

  it('JPEG: walks segments, fill bytes and standalone markers to the first frame header', () => {
    const dht = [0xff, 0xc4, 0x00, 0x05, 1, 2, 3]; // DHT (0xC4) is no frame: skipped by its length
    const app1 = [0xff, 0xe1, 0x00, 0x04, 0xaa, 0xbb];
    const jpeg = b64([0xff, 0xd8, 0xff, 0xff, ...app1, 0xff, 0xd0, ...dht, ...sof(0xc2, 1920, 1080)]);
    expect(imageSize(jpeg)).toEqual({ width: 1920, height: 1080 });
    // Every SOFn but C4, C8 and CC gives the size; C8 and CC are skipped like any segment.
    for (const marker of [0xc0, 0xc1, 0xc3, 0xcf]) {
      expect(imageSize(b64([0xff, 0xd8, ...sof(marker, 33, 44)]))).toEqual({ width: 33, height: 44 });
    }
    for (const marker of [0xc8, 0xcc]) {
      expect(imageSize(b64([0xff, 0xd8, ...sof(marker, 33, 44), ...sof(0xc0, 5, 6)]))).toEqual({
        width: 5,
        height: 6,
      });
    }
    // A segment that does not start with 0xFF, a length below 2, or no frame header: no size.
    expect(imageSize(b64([0xff, 0xd8, 0x00, ...sof(0xc0, 5, 6)]))).toBeNull();
    expect(imageSize(b64([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x01, ...sof(0xc0, 5, 6)]))).toBeNull();
    expect(imageSize(b64([0xff, 0xd8, ...app1, ...app1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toBeNull();
  });

  it('finds a JPEG frame header behind 100 KB of EXIF', () => {
    const exif = Buffer.alloc(60_000);
    exif[0] = 0xff;
    exif[1] = 0xe1;
    exif.writeUInt16BE(60_000 - 2, 2);
    const jpeg = Buffer.concat([Buffer.from([0xff, 0xd8]), exif, exif, Buffer.from(sof(0xc0, 800, 600))]);
    expect(imageSize(b64(jpeg))).toEqual({ width: 800, height: 600 });
  });

  it('is null for anything else', () => {
    expect(imageSize(b64(ascii('BM not a bitmap reader')))).toBeNull();
    expect(imageSize('')).toBeNull();
  });
});

/** A WAV with a `fmt ` chunk of `byteRate` and a `data` chunk declaring `declared` bytes, `present` there. */
function wav(byteRate: number, declared: number, present: number, extra: Buffer = Buffer.alloc(0)): string {
  const fmt = Buffer.alloc(24);
  fmt.write('fmt ', 0, 'latin1');
  fmt.writeUInt32LE(16, 4);
  fmt.writeUInt16LE(1, 8);
  fmt.writeUInt16LE(1, 10);
  fmt.writeUInt32LE(byteRate / 2, 12);
  fmt.writeUInt32LE(byteRate, 16);
  fmt.writeUInt16LE(2, 20);
  fmt.writeUInt16LE(16, 22);
  const data = Buffer.alloc(8);
  data.write('data', 0, 'latin1');
  data.writeUInt32LE(declared, 4);
  const head = Buffer.concat([Buffer.from('RIFF\0\0\0\0WAVE', 'latin1'), fmt, extra, data]);
  return b64(Buffer.concat([head, Buffer.alloc(present)]));
}

describe('wavSeconds', () => {
  it('is the data chunk over the byte rate', () => {
    expect(wavSeconds(wav(8000, 24_000, 24_000))).toBe(3);
    expect(wavSeconds(wav(8000, 4000, 4000))).toBe(0.5);
  });

  it('takes what is there when the header claims more, or streams (0 or 0xFFFFFFFF)', () => {
    expect(wavSeconds(wav(8000, 80_000, 16_000))).toBe(2);
    expect(wavSeconds(wav(8000, 0, 8000))).toBe(1);
    expect(wavSeconds(wav(8000, 0xffffffff, 12_000))).toBe(1.5);
  });

  it('skips other chunks, an odd-sized one with its pad byte', () => {
    const list = Buffer.alloc(8 + 5 + 1);
    list.write('LIST', 0, 'latin1');
    list.writeUInt32LE(5, 4);
    expect(wavSeconds(wav(1000, 2000, 2000, list))).toBe(2);
  });

  it('is null without RIFF/WAVE, without a byte rate, or without a data chunk', () => {
    expect(wavSeconds(b64(ascii('RIFF\0\0\0\0AVI LIST')))).toBeNull();
    expect(wavSeconds(b64(ascii('RIFF\0\0\0')))).toBeNull();
    expect(wavSeconds(wav(0, 100, 100))).toBeNull();
    const noData = Buffer.from(wav(8000, 8, 8), 'base64').subarray(0, 12 + 24);
    expect(wavSeconds(b64(noData))).toBeNull();
  });
});

describe('pdfPages', () => {
  const pdf = (body: string) => b64(ascii(`%PDF-1.4\n${body}\n%%EOF`));

  it('counts /Type /Page objects, not /Pages', () => {
    expect(
      pdfPages(
        pdf('<< /Type /Pages /Kids [] >> << /Type /Page >> << /Type/Page >> << /Type /Page/Parent 2 >>'),
      ),
    ).toBe(3);
  });

  it("takes a page tree's /Count when it says more than the objects seen", () => {
    expect(pdfPages(pdf('<< /Type /Pages /Count 12 >> << /Type /Page >> << /Type /Pages /Count 40 >>'))).toBe(
      40,
    );
    expect(pdfPages(pdf('<< /Type /Page >> << /Type /Page >> << /Count 1 >>'))).toBe(2);
  });

  it('is null when it is not a PDF, shows no page, or hides its objects in object streams', () => {
    expect(pdfPages(b64(ascii('%PDF')))).toBeNull();
    expect(pdfPages(b64(ascii('%!PS-Adobe /Type /Page')))).toBeNull();
    expect(pdfPages(pdf('<< /Type /Catalog >>'))).toBeNull();
    expect(pdfPages(pdf('<< /Type /Pages /Count 0 >>'))).toBeNull();
    expect(pdfPages(pdf('<< /Type /ObjStm /N 5 >> << /Type /Page >>'))).toBeNull();
  });
});

// Cases added from the mutation run's survivors (mutation/survivors/).
describe('media headers at their edges', () => {
  it('a data URL only at the start of the text', () => {
    expect(parseDataUrl('see data:image/png;base64,AAAA')).toBeNull();
  });

  it('PNG: exactly the 24 bytes up to the height are enough; the signature and a height of 0 count', () => {
    const png = Buffer.alloc(24);
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(png, 0);
    png.write('IHDR', 12, 'latin1');
    png.writeUInt32BE(640, 16);
    png.writeUInt32BE(480, 20);
    expect(imageSize(b64(png))).toEqual({ width: 640, height: 480 });
    const noSignature = Buffer.from(png);
    noSignature.writeUInt32BE(0x12345678, 0);
    expect(imageSize(b64(noSignature))).toBeNull();
    png.writeUInt32BE(0, 20);
    expect(imageSize(b64(png))).toBeNull();
  });

  it('GIF: exactly 10 bytes are enough', () => {
    expect(imageSize(b64([...ascii('GIF89a'), 0x10, 0x00, 0x20, 0x00]))).toEqual({ width: 16, height: 32 });
  });

  it('WebP: needs RIFF, WEBP and 30 bytes', () => {
    const vp8 = (riff: string, webp: string, length = 30) => {
      const b = Buffer.alloc(length);
      b.write(riff, 0, 'latin1');
      b.write(webp, 8, 'latin1');
      b.write('VP8 ', 12, 'latin1');
      if (length >= 30) {
        b.writeUInt16LE(640, 26);
        b.writeUInt16LE(480, 28);
      }
      return b64(b);
    };
    expect(imageSize(vp8('RIFF', 'WEBP'))).toEqual({ width: 640, height: 480 });
    expect(imageSize(vp8('RIFX', 'WEBP'))).toBeNull();
    expect(imageSize(vp8('RIFF', 'WAVE'))).toBeNull();
    expect(imageSize(vp8('RIFF', 'WEBP', 29))).toBeNull();
  });

  /** SOF0 with this size (as in the JPEG case above). */
  const sof0 = (width: number, height: number): number[] => {
    const s = Buffer.alloc(19);
    s[0] = 0xff;
    s[1] = 0xc0;
    s.writeUInt16BE(17, 2);
    s[4] = 8;
    s.writeUInt16BE(height, 5);
    s.writeUInt16BE(width, 7);
    return [...s];
  };

  it('JPEG: every standalone marker (SOI, TEM, RST0 to RST7) and an empty segment are stepped over', () => {
    const standalone = [0xff, 0xd8, 0xff, 0x01, 0xff, 0xd0, 0xff, 0xd7];
    const empty = [0xff, 0xe2, 0x00, 0x02]; // a segment of length 2: its length field alone
    expect(imageSize(b64([0xff, 0xd8, ...standalone, ...empty, ...sof0(300, 200)]))).toEqual({
      width: 300,
      height: 200,
    });
  });

  it('JPEG: a frame header is read only behind the SOI marker FF D8', () => {
    for (const start of [
      [0x00, 0x00],
      [0x00, 0xd8],
      [0xff, 0x00],
      [0xd8, 0xff],
    ]) {
      expect(imageSize(b64([...start, ...sof0(300, 200)])), String(start)).toBeNull();
    }
  });

  it('JPEG: a segment whose marker is below SOF0 (0xC0) is no frame header, whatever its bytes', () => {
    // Marker 0x50 with length 6 and bytes that would read as a 0xBBFF x 0xC000 frame: stepped over.
    const low = [0xff, 0x50, 0x00, 0x06, 0x08, 0xaa, 0xbb, 0xcc];
    expect(imageSize(b64([0xff, 0xd8, ...low, ...sof0(300, 200)]))).toEqual({ width: 300, height: 200 });
    const bf = [0xff, 0xbf, 0x00, 0x06, 0x08, 0xaa, 0xbb, 0xcc];
    expect(imageSize(b64([0xff, 0xd8, ...bf, ...sof0(300, 200)]))).toEqual({ width: 300, height: 200 });
  });

  it('JPEG: a frame header cut before its last byte gives no size', () => {
    // 0xFFD8 then SOF0 up to the width's high byte: 2 + 9 bytes.
    expect(imageSize(b64([0xff, 0xd8, ...sof0(300, 200)].slice(0, 11)))).toBeNull();
  });

  it('JPEG: the frame header is looked for in the first 256 KiB only', () => {
    const exif = Buffer.alloc(65_000);
    exif[0] = 0xff;
    exif[1] = 0xe1;
    exif.writeUInt16BE(65_000 - 2, 2);
    // 5 x 65,000 bytes of EXIF: the frame header starts past 256 KiB (262,144 bytes).
    const jpeg = Buffer.concat([
      Buffer.from([0xff, 0xd8]),
      exif,
      exif,
      exif,
      exif,
      exif,
      Buffer.from(sof0(8, 6)),
    ]);
    expect(imageSize(b64(jpeg))).toBeNull();
  });
});

describe('WAV headers at their edges', () => {
  /** A RIFF file with these 4-byte tags, a fmt chunk of 8,000 bytes a second and 8,000 data bytes. */
  function riff(tag: string, form: string): string {
    const fmt = Buffer.alloc(24);
    fmt.write('fmt ', 0, 'latin1');
    fmt.writeUInt32LE(16, 4);
    fmt.writeUInt32LE(8000, 16);
    const data = Buffer.alloc(8 + 8000);
    data.write('data', 0, 'latin1');
    data.writeUInt32LE(8000, 4);
    return b64(Buffer.concat([Buffer.from(`${tag}\0\0\0\0${form}`, 'latin1'), fmt, data]));
  }

  it('needs RIFF and WAVE both', () => {
    expect(wavSeconds(riff('RIFF', 'WAVE'))).toBe(1);
    expect(wavSeconds(riff('RIFF', 'AVI '))).toBeNull();
    expect(wavSeconds(riff('RIFX', 'WAVE'))).toBeNull();
  });

  it('a declared size below what is there: the declared size', () => {
    expect(wavSeconds(wav(8000, 8000, 16_000))).toBe(1);
  });

  it('an empty data chunk at the very end: 0 seconds', () => {
    expect(wavSeconds(wav(8000, 0, 0))).toBe(0);
  });

  it('a fmt chunk cut before its byte rate gives no duration (and does not throw)', () => {
    const cut = (bytes: number) =>
      Buffer.concat([
        Buffer.from('RIFF\0\0\0\0WAVEfmt ', 'latin1'),
        Buffer.from([16, 0, 0, 0]),
        Buffer.alloc(bytes),
      ]);
    for (const bytes of [0, 4, 6, 8, 10]) expect(wavSeconds(b64(cut(bytes))), `${bytes}`).toBeNull();
  });

  it('a fmt chunk too short to hold a byte rate gives none: the next chunk is not read as one', () => {
    // A fmt chunk of 4 bytes (format 1, 1 channel; PCM's is 16 bytes, the byte rate at 8..11), then a
    // data chunk of 64,000 bytes: the bytes at 16..19 past the fmt header are the data chunk's size, no
    // byte rate. Read as one, the clip would be 64,000 / 64,000 = 1 s.
    const fmt = Buffer.concat([Buffer.from('fmt ', 'latin1'), Buffer.from([4, 0, 0, 0, 1, 0, 1, 0])]);
    const data = Buffer.concat([Buffer.from('data', 'latin1'), Buffer.from([0x00, 0xfa, 0, 0])]);
    const clip = Buffer.concat([Buffer.from('RIFF\0\0\0\0WAVE', 'latin1'), fmt, data, Buffer.alloc(64_000)]);
    expect(wavSeconds(b64(clip))).toBeNull();
    // 12 bytes hold it (format, channels, sample rate, byte rate): 8,000 a second, 64,000 bytes: 8 s.
    const fmt12 = Buffer.alloc(20);
    fmt12.write('fmt ', 0, 'latin1');
    fmt12.writeUInt32LE(12, 4);
    fmt12.writeUInt32LE(8000, 16);
    const clip12 = Buffer.concat([
      Buffer.from('RIFF\0\0\0\0WAVE', 'latin1'),
      fmt12,
      data,
      Buffer.alloc(64_000),
    ]);
    expect(wavSeconds(b64(clip12))).toBe(8);
  });
});

describe('PDF page count at its edges', () => {
  it('reads a /Count with more than one space before it', () => {
    expect(pdfPages(b64(ascii('%PDF-1.4\n<< /Type /Pages /Count  12 >>\n%%EOF')))).toBe(12);
  });
});
