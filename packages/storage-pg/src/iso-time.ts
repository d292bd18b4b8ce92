/**
 * `date.toISOString()`, faster for the times a batch carries (each settlement sends three): the text up
 * to the minute is kept from the last call and only the seconds and milliseconds are written, where
 * `toISOString` formats the whole date each time (~0.6 µs, measured on this project's machine). Any
 * time outside the minute last seen (or in a year that `toISOString` writes with six digits) takes
 * `toISOString` itself, which also throws as it does for an invalid date.
 */
let minuteStartMs = Number.NaN;
let minutePrefix = '';

export function isoTime(date: Date): string {
  const ms = date.getTime();
  const into = ms - minuteStartMs;
  if (into >= 0 && into < 60_000) {
    const seconds = Math.floor(into / 1000);
    const millis = into - seconds * 1000;
    return `${minutePrefix}${seconds < 10 ? '0' : ''}${seconds}.${millis < 100 ? (millis < 10 ? '00' : '0') : ''}${millis}Z`;
  }
  const text = date.toISOString();
  if (text.length === 24) {
    minuteStartMs = ms - (((ms % 60_000) + 60_000) % 60_000);
    minutePrefix = text.slice(0, 17); // YYYY-MM-DDTHH:MM:
  }
  return text;
}
