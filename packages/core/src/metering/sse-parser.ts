/**
 * Incremental Server-Sent Events parser: feed it decoded text as it arrives, it calls `onData`
 * with each event's `data` payload. Handles events split across chunks and `\r\n` line ends.
 */
export class SseParser {
  private buffer = '';
  private data: string[] = [];

  constructor(private readonly onData: (data: string, event: string | null) => void) {}

  private event: string | null = null;

  push(text: string): void {
    this.buffer += text;
    let start = 0;
    for (;;) {
      const nl = this.buffer.indexOf('\n', start);
      if (nl === -1) break;
      let line = this.buffer.slice(start, nl);
      start = nl + 1;
      if (line.endsWith('\r')) line = line.slice(0, -1);
      this.line(line);
    }
    this.buffer = start === 0 ? this.buffer : this.buffer.slice(start);
  }

  /** Dispatches a last event that was not followed by a blank line (a cut stream). */
  flush(): void {
    if (this.buffer.length > 0) {
      this.line(this.buffer);
      this.buffer = '';
    }
    this.line('');
  }

  private line(line: string): void {
    if (line === '') {
      if (this.data.length > 0) this.onData(this.data.join('\n'), this.event);
      this.data = [];
      this.event = null;
      return;
    }
    if (line.startsWith('data:')) {
      this.data.push(line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5));
    } else if (line.startsWith('event:')) {
      this.event = line.slice(6).trim();
    }
  }
}
