// The upload queue: files go up in batches (a multipart request each), a few batches at
// a time; each file ends created, duplicate or rejected (the server's answer per file)
// or failed (its batch did not get through: retry it; the other batches carry on).
// No React here: the queue calls `onChange` and the page reads its state.
import type { FoundFile } from "./walk";

export type FileStatus =
  | "queued"
  | "uploading"
  | "processing"
  | "created"
  | "duplicate"
  | "rejected"
  | "failed";

export interface UploadFile {
  readonly id: number;
  readonly file: File;
  readonly path: string;
  status: FileStatus;
  /** Share of the file's bytes sent, 0..1. */
  progress: number;
  imageId: number | null;
  /** Why it was rejected (the server's reason) or why its batch failed. */
  reason: string | null;
  batch: number;
}

export interface Batch {
  readonly id: number;
  readonly files: UploadFile[];
  /** What the batch goes to, as given to `add` (e.g. the split of an upload). */
  readonly tag: string | null;
  state: "queued" | "sending" | "done" | "failed";
  error: string | null;
  attempts: number;
}

/** The server's answer for one file (UploadItem). */
export interface SentItem {
  filename: string;
  status: "created" | "duplicate" | "rejected";
  image_id?: number | null;
  reason?: string | null;
}

/** Sends one batch; resolves with one item per file, in order, or throws UploadError. */
export type Sender = (
  files: readonly File[],
  onProgress: (loaded: number, total: number) => void,
  signal: AbortSignal,
  tag: string | null,
) => Promise<SentItem[]>;

export class UploadError extends Error {
  readonly status: number | null;
  /** The next batches would fail the same way (signed out, no permission, no project). */
  readonly fatal: boolean;

  constructor(message: string, status: number | null = null, fatal = false) {
    super(message);
    this.name = "UploadError";
    this.status = status;
    this.fatal = fatal;
  }
}

export interface QueueOptions {
  send: Sender;
  /** Files per request; by default `batchSizeFor` the files of each `add`. */
  batchSize?: number;
  /** Requests in flight at once. */
  concurrency?: number;
  onChange?: () => void;
}

export interface Counts {
  total: number;
  queued: number;
  sending: number;
  created: number;
  duplicate: number;
  rejected: number;
  failed: number;
  /** Files' worth sent (each file's share of its bytes, summed), for an overall bar. */
  sent: number;
}

export const CONCURRENCY = 3;
export const BATCH_MIN = 5;
export const BATCH_MAX = 100;

/**
 * Files per request for an upload of `count` files: about four rounds of `concurrency`
 * requests, so the server works on several batches at once and none is left alone at
 * the end, within 5..100 files. Each request costs the server (a transaction, its
 * answer) and the browser (a request of its own in every process) more than a small
 * file does: 2,000 dropped files in batches of 100 instead of 20 upload in 2.3-2.5 s
 * instead of 4.2, and cost the browser 1.2-1.35 s of CPU instead of 1.9
 * (bench/ui_upload.py). A batch too large for the server is split (see `run`).
 */
export function batchSizeFor(count: number, concurrency = CONCURRENCY): number {
  return Math.min(BATCH_MAX, Math.max(BATCH_MIN, Math.ceil(count / (concurrency * 4))));
}

export class UploadQueue {
  readonly files: UploadFile[] = [];
  readonly batches: Batch[] = [];
  /** Bumped on every change: a cheap "has anything changed" for renderers. */
  version = 0;
  private readonly send: Sender;
  private readonly batchSize: number | null;
  private readonly concurrency: number;
  private readonly onChange: () => void;
  private controller = new AbortController();
  private active = 0;
  private idle: Array<() => void> = [];

  constructor(options: QueueOptions) {
    this.send = options.send;
    this.batchSize = options.batchSize === undefined ? null : Math.max(1, options.batchSize);
    this.concurrency = Math.max(1, options.concurrency ?? CONCURRENCY);
    this.onChange = options.onChange ?? (() => {});
  }

  /** Queues files in batches and starts sending. */
  add(found: readonly FoundFile[], tag: string | null = null): void {
    // Batches by count only: for a picked folder every `File.size` read is a synchronous
    // file-system call in Chromium (2,000 files: half a second of the page's main thread
    // while the server wants the CPU). The server caps each file (413 per file) anyway,
    // and a batch of large files too big for one request is split when it says so.
    const size = this.batchSize ?? batchSizeFor(found.length, this.concurrency);
    let current: UploadFile[] = [];
    const close = () => {
      if (current.length === 0) return;
      this.newBatch(current, tag);
      current = [];
    };
    for (const { file, path } of found) {
      if (current.length >= size) close();
      const entry: UploadFile = {
        id: this.files.length,
        file,
        path,
        status: "queued",
        progress: 0,
        imageId: null,
        reason: null,
        batch: this.batches.length,
      };
      this.files.push(entry);
      current.push(entry);
    }
    close();
    this.changed();
    this.pump();
  }

  /** Sends the failed batches again; the rest are untouched. */
  retryFailed(): void {
    if (this.controller.signal.aborted) this.controller = new AbortController();
    for (const batch of this.batches) {
      if (batch.state !== "failed") continue;
      batch.state = "queued";
      batch.error = null;
      for (const file of batch.files) {
        file.status = "queued";
        file.progress = 0;
        file.reason = null;
      }
    }
    this.changed();
    this.pump();
  }

  /** Stops sending: requests in flight are aborted, the batches not sent fail. */
  cancel(): void {
    this.controller.abort();
    for (const batch of this.batches) {
      if (batch.state === "queued") this.fail(batch, "Canceled.");
    }
    this.changed();
  }

  get failedBatches(): Batch[] {
    return this.batches.filter((b) => b.state === "failed");
  }

  /** Nothing queued or in flight. */
  get settled(): boolean {
    return this.active === 0 && !this.batches.some((b) => b.state === "queued");
  }

  /** Resolves when nothing is queued or in flight. */
  whenSettled(): Promise<void> {
    if (this.settled) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  counts(): Counts {
    const counts: Counts = {
      total: this.files.length,
      queued: 0,
      sending: 0,
      created: 0,
      duplicate: 0,
      rejected: 0,
      failed: 0,
      sent: 0,
    };
    for (const f of this.files) {
      counts.sent += f.progress;
      if (f.status === "uploading" || f.status === "processing") counts.sending += 1;
      else counts[f.status] += 1;
    }
    return counts;
  }

  private changed(): void {
    this.version += 1;
    this.onChange();
  }

  private pump(): void {
    if (this.controller.signal.aborted) return;
    while (this.active < this.concurrency) {
      const next = this.batches.find((b) => b.state === "queued");
      if (!next) break;
      this.active += 1;
      void this.run(next).finally(() => {
        this.active -= 1;
        this.pump();
        if (this.settled) {
          this.changed(); // listeners see `settled` turn true
          const waiting = this.idle;
          this.idle = [];
          for (const resolve of waiting) resolve();
        }
      });
    }
  }

  private async run(batch: Batch): Promise<void> {
    batch.state = "sending";
    batch.attempts += 1;
    for (const f of batch.files) f.status = "uploading";
    this.changed();
    const n = batch.files.length;
    const onProgress = (loaded: number, total: number) => {
      // Parts go out in order. Sizes are not read (see `add`): each file counts as an
      // equal share of the request, which is close enough for a progress bar.
      const sent = total > 0 ? (loaded / total) * n : 0;
      const done = loaded >= total && total > 0;
      for (const [i, f] of batch.files.entries()) {
        f.progress = Math.min(1, Math.max(0, sent - i));
        if (done) f.status = "processing";
      }
      this.changed();
    };
    try {
      const items = await this.send(
        batch.files.map((f) => f.file),
        onProgress,
        this.controller.signal,
        batch.tag,
      );
      for (const [i, f] of batch.files.entries()) {
        const item = items[i];
        f.progress = 1;
        if (!item) {
          f.status = "failed";
          f.reason = "The server did not answer for this file.";
          continue;
        }
        f.status = item.status;
        f.imageId = item.image_id ?? null;
        f.reason = item.status === "rejected" ? (item.reason ?? "rejected") : null;
      }
      batch.state = batch.files.some((f) => f.status === "failed") ? "failed" : "done";
      batch.error = batch.state === "failed" ? "The server did not answer for every file." : null;
    } catch (error) {
      if (
        error instanceof UploadError &&
        error.status === 413 &&
        batch.files.length > 1 &&
        !this.controller.signal.aborted
      ) {
        // The request, not a file, was too large (the server answers per file
        // otherwise): the halves go again, down to one file each if need be, which
        // then gets its own answer. The server says so from the declared length,
        // before the body is sent.
        this.split(batch);
        this.changed();
        return;
      }
      const message = this.controller.signal.aborted
        ? "Canceled."
        : error instanceof Error
          ? error.message
          : String(error);
      this.fail(batch, message);
      if (error instanceof UploadError && error.fatal) {
        for (const other of this.batches) if (other.state === "queued") this.fail(other, message);
      }
    }
    this.changed();
  }

  /** A queued batch of `files`, which get its number. */
  private newBatch(files: UploadFile[], tag: string | null): Batch {
    const batch: Batch = { id: this.batches.length, files, tag, state: "queued", error: null, attempts: 0 };
    this.batches.push(batch);
    for (const f of files) f.batch = batch.id;
    return batch;
  }

  /** Queues `batch` again as two: its first half, and the rest in a new batch. */
  private split(batch: Batch): void {
    const rest = this.newBatch(batch.files.splice(Math.ceil(batch.files.length / 2)), batch.tag);
    batch.state = "queued";
    for (const f of [...batch.files, ...rest.files]) {
      f.status = "queued";
      f.progress = 0;
    }
  }

  private fail(batch: Batch, message: string): void {
    batch.state = "failed";
    batch.error = message;
    for (const f of batch.files) {
      f.status = "failed";
      f.progress = 0;
      f.reason = message;
    }
  }
}
