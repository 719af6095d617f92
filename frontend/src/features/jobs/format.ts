// Jobs in words: what kind of work, where it waits, how long it took. Pure functions,
// so the list, the job page and their tests agree.
import type { Schemas } from "../../api/client";

export type Job = Schemas["JobRead"];
export type JobState = Job["state"];

export const JOB_STATES: JobState[] = ["queued", "running", "succeeded", "failed", "canceled"];

export const STATE_LABELS: Record<JobState, string> = {
  queued: "Waiting",
  running: "Running",
  succeeded: "Succeeded",
  failed: "Failed",
  canceled: "Canceled",
};

export function isJobState(value: string | null): value is JobState {
  return value !== null && (JOB_STATES as string[]).includes(value);
}

export const isUnfinished = (job: Pick<Job, "state">) => job.state === "queued" || job.state === "running";

const KIND_LABELS: Record<string, string> = {
  "datasets.import": "import",
  "datasets.export": "export",
  "training.train": "training",
  "autolabel.run": "auto-label",
  "models.inspect": "model inspection",
  "models.predict": "predict",
  "diagnostics.noop": "diagnostic (no-op)",
  "diagnostics.sleep": "diagnostic (sleep)",
};

/** "datasets.export" → "export"; a kind from a plugin keeps its own name. */
export function kindLabel(kind: string): string {
  return KIND_LABELS[kind] ?? kind;
}

/** 1 → "1st", 2 → "2nd", 3 → "3rd", 11 → "11th", 22 → "22nd", 113 → "113th". */
export function ordinal(n: number): string {
  const tens = n % 100;
  if (tens >= 11 && tens <= 13) return `${n}th`;
  switch (n % 10) {
    case 1:
      return `${n}st`;
    case 2:
      return `${n}nd`;
    case 3:
      return `${n}rd`;
    default:
      return `${n}th`;
  }
}

/** "gpu" → "GPU", "cpu" → "CPU"; other pools ("a100") keep their name. */
export function poolLabel(pool: string): string {
  return pool === "gpu" || pool === "cpu" ? pool.toUpperCase() : pool;
}

/** Where a waiting job stands: "3rd in the GPU queue", "next in the CPU queue". */
export function positionText(job: Pick<Job, "state" | "position" | "pool">): string | null {
  if (job.state !== "queued") return null;
  const queue = `the ${poolLabel(job.pool)} queue`;
  if (job.position === null || job.position === undefined) return `Waiting in ${queue}`;
  if (job.position === 0) return "About to start";
  if (job.position === 1) return `Next in ${queue}`;
  return `${ordinal(job.position)} in ${queue}`;
}

/** 4 s, 1 min 05 s, 2 h 03 min, 3 d 4 h. */
export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(seconds % 60).padStart(2, "0")} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours} h ${String(minutes % 60).padStart(2, "0")} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

const time = (value: string | null | undefined): number | null => {
  if (!value) return null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t;
};

/** How long it ran (up to now while running); null before it started. */
export function runTime(job: Pick<Job, "started_at" | "finished_at" | "state">, now: number): number | null {
  const started = time(job.started_at);
  if (started === null) return null;
  const end = time(job.finished_at) ?? (job.state === "running" ? now : null);
  return end === null ? null : Math.max(0, end - started);
}

/** How long it has waited since it was submitted (queued jobs only). */
export function waitTime(job: Pick<Job, "created_at" | "state">, now: number): number | null {
  const created = time(job.created_at);
  return job.state === "queued" && created !== null ? Math.max(0, now - created) : null;
}

/** A progress fraction (0..1) as a whole percentage, clamped. */
export function percent(progress: number): number {
  if (!Number.isFinite(progress)) return 0;
  return Math.round(Math.min(1, Math.max(0, progress)) * 100);
}

export interface LogLine {
  id: number;
  line: string;
}

/**
 * The log so far plus new lines, in event order: the history request and the live
 * stream overlap (the stream replays from the start) and may land in either order, so
 * lines already held (by event id) are skipped; only the newest `cap` lines are kept so
 * a chatty job cannot grow the page without bound.
 */
export function appendLines(held: LogLine[], incoming: LogLine[], cap: number): LogLine[] {
  let last = held.at(-1)?.id ?? 0;
  const fresh: LogLine[] = [];
  let ordered = true;
  for (const line of incoming) {
    if (line.id > last) {
      fresh.push(line);
      last = line.id;
    } else {
      ordered = false;
    }
  }
  let all: LogLine[];
  if (ordered) {
    if (fresh.length === 0) return held;
    all = held.concat(fresh);
  } else {
    // Older lines arrived after newer ones: merge by id (rare, so the sort is fine).
    const byId = new Map(held.map((l) => [l.id, l]));
    const before = byId.size;
    for (const line of incoming) if (!byId.has(line.id)) byId.set(line.id, line);
    if (byId.size === before) return held;
    all = [...byId.values()].sort((a, b) => a.id - b.id);
  }
  return all.length > cap ? all.slice(all.length - cap) : all;
}

/** Whether a scroller shows its end (a few pixels of slack for rounding). */
export function atBottom(el: { scrollTop: number; clientHeight: number; scrollHeight: number }): boolean {
  return el.scrollHeight - el.scrollTop - el.clientHeight <= 4;
}
