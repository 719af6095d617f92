// Per-epoch training metrics as the training job reports them (workers/ml/train_child.py:
// ultralytics' loss items and validation metrics, one `metrics` event per epoch), and the
// pure shaping the charts need.
import type { Schemas } from "../../api/client";

type Job = Schemas["JobRead"];
type JobEvent = Schemas["JobEventRead"];

/** One epoch: its number and every numeric value it reported. */
export interface Epoch {
  epoch: number;
  values: Record<string, number>;
}

export interface Metric {
  key: string;
  label: string;
}

export const METRICS = {
  map5095: { key: "metrics/mAP50-95(B)", label: "mAP50-95" },
  map50: { key: "metrics/mAP50(B)", label: "mAP50" },
  precision: { key: "metrics/precision(B)", label: "Precision" },
  recall: { key: "metrics/recall(B)", label: "Recall" },
  trainBox: { key: "train/box_loss", label: "Train box loss" },
  trainCls: { key: "train/cls_loss", label: "Train class loss" },
  trainDfl: { key: "train/dfl_loss", label: "Train DFL loss" },
  valBox: { key: "val/box_loss", label: "Val box loss" },
  valCls: { key: "val/cls_loss", label: "Val class loss" },
  valDfl: { key: "val/dfl_loss", label: "Val DFL loss" },
} as const satisfies Record<string, Metric>;

export type MetricId = keyof typeof METRICS;

/** The run page's charts: each a group of metrics on one y axis. */
export const CHARTS: { id: string; title: string; metrics: MetricId[]; score: boolean }[] = [
  { id: "losses", title: "Losses", metrics: ["trainBox", "trainCls", "trainDfl", "valBox", "valCls", "valDfl"], score: false },
  { id: "pr", title: "Precision and recall", metrics: ["precision", "recall"], score: true },
  { id: "map", title: "mAP", metrics: ["map50", "map5095"], score: true },
];

/** Scores (mAP, precision, recall) live in [0, 1]; losses do not. */
export function isScore(id: MetricId): boolean {
  return !id.startsWith("train") && !id.startsWith("val");
}

/** What the overlay compares, first the default. */
export const OVERLAY_METRICS: MetricId[] = [
  "map5095",
  "map50",
  "precision",
  "recall",
  "trainBox",
  "trainCls",
  "trainDfl",
  "valBox",
  "valCls",
  "valDfl",
];

export function isMetricId(value: string | null): value is MetricId {
  return value !== null && Object.hasOwn(METRICS, value);
}

/** A metrics event's data as an epoch, or null when it carries no epoch number. */
export function toEpoch(data: Record<string, unknown>): Epoch | null {
  const epoch = data.epoch;
  if (typeof epoch !== "number" || !Number.isInteger(epoch) || epoch < 1) return null;
  const values: Record<string, number> = {};
  for (const [key, value] of Object.entries(data)) {
    if (key !== "epoch" && typeof value === "number" && Number.isFinite(value)) values[key] = value;
  }
  return { epoch, values };
}

/**
 * Adds epochs to a list sorted by epoch, keeping the first report of each (the same
 * epoch comes from GET /metrics and again from the event stream's replay). Returns the
 * same array when nothing was new, so React skips the redraw.
 */
export function mergeEpochs(current: readonly Epoch[], incoming: readonly Epoch[]): Epoch[] {
  const seen = new Set(current.map((e) => e.epoch));
  const fresh = incoming.filter((e) => {
    if (seen.has(e.epoch)) return false;
    seen.add(e.epoch);
    return true;
  });
  if (fresh.length === 0) return current as Epoch[];
  const last = current[current.length - 1];
  const inOrder = fresh.every((e, i) => e.epoch > (i === 0 ? (last?.epoch ?? 0) : fresh[i - 1]!.epoch));
  return inOrder ? [...current, ...fresh] : [...current, ...fresh].sort((a, b) => a.epoch - b.epoch);
}

export function epochsFromEvents(events: readonly JobEvent[]): Epoch[] {
  return mergeEpochs(
    [],
    events.flatMap((e) => {
      const epoch = toEpoch(e.data);
      return epoch ? [epoch] : [];
    }),
  );
}

/** uPlot's columns: x (epochs), then one column per key (null where missing). */
export function columns(epochs: readonly Epoch[], keys: readonly string[]): [number[], ...(number | null)[][]] {
  const x = epochs.map((e) => e.epoch);
  const ys = keys.map((key) => epochs.map((e) => e.values[key] ?? null));
  return [x, ...ys];
}

/**
 * Several runs on one x axis (the union of their epochs), one column per run: what the
 * overlay draws. Each run's epochs must be sorted.
 */
export function overlayColumns(runs: readonly (readonly Epoch[])[], key: string): [number[], ...(number | null)[][]] {
  const all = new Set<number>();
  for (const run of runs) for (const e of run) all.add(e.epoch);
  const x = [...all].sort((a, b) => a - b);
  const index = new Map(x.map((epoch, i) => [epoch, i]));
  const ys = runs.map((run) => {
    const column: (number | null)[] = new Array<number | null>(x.length).fill(null);
    for (const e of run) {
      const value = e.values[key];
      if (value !== undefined) column[index.get(e.epoch)!] = value;
    }
    return column;
  });
  return [x, ...ys];
}

/** The metric keys any epoch reported, so empty series are left out. */
export function reportedKeys(epochs: readonly Epoch[]): Set<string> {
  const keys = new Set<string>();
  for (const e of epochs) for (const key of Object.keys(e.values)) keys.add(key);
  return keys;
}

export interface Best {
  value: number;
  epoch: number;
}

/** The highest value of `key` and its epoch (for mAP, precision, recall). */
export function best(epochs: readonly Epoch[], key: string): Best | null {
  let found: Best | null = null;
  for (const e of epochs) {
    const value = e.values[key];
    if (value !== undefined && (found === null || value > found.value)) found = { value, epoch: e.epoch };
  }
  return found;
}

// --- a training job's record ------------------------------------------------------------

export const TRAINING_KIND = "training.train";

export function isFinished(job: Pick<Job, "state">): boolean {
  return job.state === "succeeded" || job.state === "failed" || job.state === "canceled";
}

function numberParam(job: Pick<Job, "params">, name: string): number | null {
  const value = job.params[name];
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

export function totalEpochs(job: Pick<Job, "params">): number | null {
  return numberParam(job, "epochs");
}

/** Epochs reported so far: the job's progress is epochs done / epochs. */
export function epochsDone(job: Pick<Job, "params" | "progress">): number | null {
  const total = totalEpochs(job);
  return total === null ? null : Math.round(job.progress * total);
}

/** The registered model of a finished run (its job result). */
export function modelOf(job: Pick<Job, "result">): number | null {
  const id = job.result?.model_id;
  return typeof id === "number" ? id : null;
}

/** The final metrics of a finished run (the best weights' validation), by short name. */
export function resultMetric(job: Pick<Job, "result">, name: string): number | null {
  const metrics = job.result?.metrics;
  if (!metrics || typeof metrics !== "object") return null;
  const value = (metrics as Record<string, unknown>)[name];
  return typeof value === "number" ? value : null;
}

/** "yolo11n.yaml", or "model 12" for a registered base. */
export function baseLabel(job: Pick<Job, "params">): string {
  const base = job.params.base;
  if (typeof base !== "string") return "—";
  return base.startsWith("model:") ? `model ${base.slice("model:".length)}` : base;
}

export function baseModelId(job: Pick<Job, "params">): number | null {
  const base = job.params.base;
  if (typeof base !== "string" || !base.startsWith("model:")) return null;
  const id = Number(base.slice("model:".length));
  return Number.isSafeInteger(id) && id > 0 ? id : null;
}

/** Seconds a run has taken: to its end, or to `now` while it runs; null before it starts. */
export function durationSeconds(job: Pick<Job, "started_at" | "finished_at">, now = Date.now()): number | null {
  if (!job.started_at) return null;
  const start = Date.parse(job.started_at);
  const end = job.finished_at ? Date.parse(job.finished_at) : now;
  return Number.isFinite(start) && Number.isFinite(end) ? Math.max(0, (end - start) / 1000) : null;
}

export function formatDuration(seconds: number | null): string {
  if (seconds === null) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function formatValue(value: number | null | undefined): string {
  if (value === null || value === undefined) return "—";
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(3);
}

/** A chart's tick or legend number as uPlot's default shows it (at most 3 decimals),
 * without Intl: ICU's first use in a fresh page costs ~20 ms before the first chart is
 * drawn (vite.config.ts makes uPlot's own formatter lazy). */
export function plainNumber(value: number): string {
  return String(Number(value.toFixed(3)) + 0);
}
