// The GPU queue page's pure parts: job kinds in words, ages, stale heartbeats, GPU
// history for the sparklines (kept here in the browser: the server sends only the
// latest sample) and the sparkline's SVG path.
import type { Schemas } from "../../api/client";

export type QueueView = Schemas["QueueView"];
export type QueuedJob = Schemas["QueuedJob"];
export type WorkerSummary = Schemas["WorkerSummary"];

const KINDS: Record<string, string> = {
  "training.train": "Training",
  "autolabel.run": "Auto-labeling",
  "models.predict": "Prediction",
  "models.inspect": "Model check",
  "datasets.import": "Dataset import",
  "datasets.export": "Dataset export",
  "diagnostics.noop": "Diagnostic (no-op)",
  "diagnostics.sleep": "Diagnostic (sleep)",
};

export function kindLabel(kind: string): string {
  return KINDS[kind] ?? kind;
}

/** "42 s", "3 min 5 s", "2 h 10 min", "3 d 4 h": short enough for a table cell. */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** Seconds from an ISO time to `now` (ms, already on the server's clock). */
export function secondsSince(iso: string, now: number): number {
  return (now - Date.parse(iso)) / 1000;
}

/** Heartbeats are due every interval; two missed ones are worth a look. */
export function isStale(ageSeconds: number, intervalSeconds: number): boolean {
  return ageSeconds > Math.max(2 * intervalSeconds, intervalSeconds + 5);
}

export function ordinal(n: number): string {
  const rest = n % 100;
  if (rest >= 11 && rest <= 13) return `${n}th`;
  return `${n}${["th", "st", "nd", "rd"][n % 10] ?? "th"}`;
}

export interface GpuSample {
  utilization: number | null;
  memoryUsed: number | null;
  memoryTotal: number | null;
}

export interface GpuInfo {
  index: number;
  name: string;
  sample: GpuSample;
}

function num(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/** A worker's GPUs as its heartbeat reported them (fields may be missing). */
export function gpusOf(worker: WorkerSummary): GpuInfo[] {
  return worker.gpus.map((gpu, i) => ({
    index: num(gpu.index) ?? i,
    name: typeof gpu.name === "string" ? gpu.name : "GPU",
    sample: {
      utilization: num(gpu.utilization),
      memoryUsed: num(gpu.memory_used),
      memoryTotal: num(gpu.memory_total),
    },
  }));
}

export const HISTORY = 60;

export interface GpuHistory {
  utilization: number[];
  memory: number[];
}

export type HistoryMap = ReadonlyMap<string, GpuHistory>;

export const gpuKey = (workerId: string, index: number) => `${workerId}/${index}`;

/**
 * The sparklines' history with one more view: every GPU gets its latest utilisation
 * (%) and memory use (% of total) appended, the last `HISTORY` kept. A GPU whose
 * samples did not change keeps its arrays (same object), so its chart does not redraw;
 * GPUs that left the view are dropped.
 */
export function appendHistory(previous: HistoryMap, view: QueueView, limit = HISTORY): Map<string, GpuHistory> {
  const next = new Map<string, GpuHistory>();
  for (const worker of view.workers) {
    for (const gpu of gpusOf(worker)) {
      const key = gpuKey(worker.id, gpu.index);
      const before = previous.get(key) ?? { utilization: [], memory: [] };
      const { utilization, memoryUsed, memoryTotal } = gpu.sample;
      const memory = memoryUsed !== null && memoryTotal ? (100 * memoryUsed) / memoryTotal : null;
      next.set(key, {
        utilization: utilization === null ? before.utilization : [...before.utilization, utilization].slice(-limit),
        memory: memory === null ? before.memory : [...before.memory, memory].slice(-limit),
      });
    }
  }
  return next;
}

/** An SVG path through 0..100 values, left to right over `width`, 100 at the top. */
export function sparkPath(values: readonly number[], width: number, height: number, slots = HISTORY): string {
  if (values.length === 0) return "";
  const step = width / Math.max(1, slots - 1);
  const start = width - step * (values.length - 1);
  return values
    .map((v, i) => {
      const x = start + i * step;
      const y = height - (Math.min(100, Math.max(0, v)) / 100) * height;
      return `${i === 0 ? "M" : "L"}${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join("");
}

/** Rows worth redrawing only when one of these changed (the table memoises on them). */
export function sameRow(a: QueuedJob, b: QueuedJob): boolean {
  return (
    a.id === b.id &&
    a.state === b.state &&
    a.position === b.position &&
    a.priority === b.priority &&
    a.worker === b.worker &&
    a.gpu === b.gpu &&
    a.progress === b.progress &&
    a.attempts === b.attempts &&
    a.cancel_requested === b.cancel_requested &&
    a.created_by_name === b.created_by_name &&
    a.project_name === b.project_name &&
    a.started_at === b.started_at
  );
}
