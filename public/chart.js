/**
 * The console's live chart: messages per second (bars) and median latency
 * (line) over the last minute, one bucket per second, on a plain canvas.
 *
 * @module
 */

const SECONDS = 60;

export class RateChart {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    /** @type {Map<number, {count: number, latencies: number[]}>} */
    this.buckets = new Map();
  }

  /** Counts one delivered message that took `latencyMs` end to end. */
  add(latencyMs) {
    const second = Math.floor(Date.now() / 1000);
    let bucket = this.buckets.get(second);
    if (!bucket) this.buckets.set(second, (bucket = { count: 0, latencies: [] }));
    bucket.count += 1;
    if (Number.isFinite(latencyMs)) bucket.latencies.push(latencyMs);
  }

  /** The last minute, oldest first: `{count, p50}` per second. */
  series() {
    const now = Math.floor(Date.now() / 1000);
    for (const second of this.buckets.keys()) if (second <= now - SECONDS) this.buckets.delete(second);
    return Array.from({ length: SECONDS }, (_, i) => {
      const bucket = this.buckets.get(now - SECONDS + 1 + i);
      return { count: bucket?.count ?? 0, p50: bucket ? median(bucket.latencies) : null };
    });
  }

  draw() {
    const series = this.series();
    const ctx = this.canvas.getContext('2d');
    const { width, height } = this.canvas;
    const pad = 24;
    const maxCount = Math.max(10, ...series.map((s) => s.count));
    const maxLatency = Math.max(10, ...series.map((s) => s.p50 ?? 0));
    const step = (width - 2 * pad) / SECONDS;
    ctx.clearRect(0, 0, width, height);
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = '#667';
    ctx.fillText(`${maxCount} msg/s`, 2, 12);
    ctx.fillText(`${Math.round(maxLatency)} ms`, width - 48, 12);
    ctx.fillStyle = '#4a6fd8';
    series.forEach((s, i) => {
      const h = ((height - 2 * pad) * s.count) / maxCount;
      ctx.fillRect(pad + i * step + 1, height - pad - h, step - 2, h);
    });
    ctx.strokeStyle = '#d8604a';
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    series.forEach((s, i) => {
      if (s.p50 === null) {
        drawing = false;
        return;
      }
      const x = pad + (i + 0.5) * step;
      const y = height - pad - ((height - 2 * pad) * s.p50) / maxLatency;
      if (drawing) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      drawing = true;
    });
    ctx.stroke();
    const last = series[SECONDS - 1];
    return `${last.count} msg/s, p50 ${last.p50 === null ? '–' : `${Math.round(last.p50)} ms`}`;
  }
}

function median(values) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}
