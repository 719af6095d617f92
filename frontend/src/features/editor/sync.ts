// Saving one image's boxes: debounced, against the revision the edit started from,
// kept in IndexedDB until the server has them. A 409 becomes a three-way merge that
// the user settles (keep mine, take theirs, merge); a lost connection or a stopped
// server is retried with backoff and whenever the browser says it is online again.
import { type BoxData, type EditorBox, toData, withIds } from "./boxes";
import { isEmptyDiff, type MergeResult, mergeBoxes } from "./merge";
import type { OfflineStore, SaveOutcome } from "./offline";

export type SaveStatus = "saved" | "pending" | "saving" | "offline" | "conflict" | "refused";

export interface ConflictState {
  /** the revision the other person's save made */
  revision: number;
  merge: MergeResult;
}

export interface SyncState {
  status: SaveStatus;
  revision: number;
  message: string | null;
  conflict: ConflictState | null;
  /** whether edits are kept in this browser (IndexedDB may be unavailable) */
  keptLocally: boolean;
}

export interface SyncDeps {
  imageId: number;
  projectId: number;
  store: OfflineStore | null;
  save(baseRevision: number, boxes: BoxData[]): Promise<SaveOutcome>;
  load(): Promise<{ revision: number; boxes: BoxData[] }>;
  /** The editor must show these boxes (the other person's, or the merge). */
  onReplace(boxes: EditorBox[]): void;
  debounceMs?: number;
  retryDelayMs?: (attempt: number) => number;
  now?: () => number;
}

export const DEBOUNCE_MS = 700;
const retryDelay = (attempt: number) => Math.min(10_000, 500 * 2 ** Math.min(attempt, 5));

export class ImageSync {
  private base: { revision: number; boxes: EditorBox[] };
  private current: EditorBox[];
  private currentAt: number;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running = false;
  private attempt = 0;
  private disposed = false;
  private state: SyncState;
  private readonly listeners = new Set<() => void>();
  private readonly deps: SyncDeps;

  constructor(
    deps: SyncDeps,
    start: { revision: number; baseBoxes: EditorBox[]; boxes: EditorBox[]; editedAt?: number },
  ) {
    this.deps = deps;
    this.base = { revision: start.revision, boxes: start.baseBoxes };
    this.current = start.boxes;
    this.currentAt = start.editedAt ?? this.now();
    this.state = {
      status: "saved",
      revision: start.revision,
      message: null,
      conflict: null,
      keptLocally: deps.store !== null,
    };
    if (start.boxes !== start.baseBoxes) this.state = { ...this.state, status: "pending" };
  }

  private started = false;
  private stopping: ReturnType<typeof setTimeout> | null = null;

  /**
   * Starts saving: edits restored from this browser are saved at once (a stale base
   * ends in the merge). Starting again right after `dispose` (React's strict mode
   * remounts) carries on as if nothing happened.
   */
  start(): void {
    if (this.stopping !== null) {
      clearTimeout(this.stopping);
      this.stopping = null;
      return;
    }
    if (this.started) return;
    this.started = true;
    if (this.current !== this.base.boxes) this.schedule(0);
  }

  private now(): number {
    return (this.deps.now ?? Date.now)();
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getState = (): SyncState => this.state;

  /** Unsaved work exists (in memory or in this browser only). */
  get dirty(): boolean {
    return this.current !== this.base.boxes || this.running;
  }

  private set(patch: Partial<SyncState>): void {
    this.state = { ...this.state, ...patch };
    for (const listener of this.listeners) listener();
  }

  private schedule(delay: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.run();
    }, delay);
  }

  private keep(): void {
    const store = this.deps.store;
    if (!store) return;
    store
      .put({
        imageId: this.deps.imageId,
        projectId: this.deps.projectId,
        baseRevision: this.base.revision,
        baseBoxes: this.base.boxes,
        boxes: this.current,
        updatedAt: this.currentAt,
      })
      .catch(() => this.set({ keptLocally: false }));
  }

  /** The editor's boxes changed. */
  edit(boxes: EditorBox[]): void {
    if (boxes === this.current || this.disposed) return;
    this.current = boxes;
    this.currentAt = Math.max(this.now(), this.currentAt + 1);
    this.keep();
    if (this.state.status === "conflict") return; // settled by the dialog first
    if (this.state.status !== "saving" && this.state.status !== "offline") {
      this.set({ status: "pending", message: null });
    }
    if (this.state.status !== "offline") this.schedule(this.deps.debounceMs ?? DEBOUNCE_MS);
  }

  /** Saves now (a retry button, leaving the image, the browser coming back online). */
  flush(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    return this.run();
  }

  private async run(): Promise<void> {
    if (this.running || this.state.status === "conflict") return;
    const boxes = this.current;
    const at = this.currentAt;
    if (boxes === this.base.boxes) {
      if (this.state.status !== "saved") this.set({ status: "saved", message: null });
      return;
    }
    this.running = true;
    this.set({ status: "saving" });
    let outcome: SaveOutcome;
    try {
      outcome = await this.deps.save(this.base.revision, boxes.map(toData));
    } catch (error) {
      outcome = { kind: "offline" };
      void error;
    }
    this.running = false;
    if (outcome.kind === "saved") {
      this.attempt = 0;
      this.base = { revision: outcome.revision, boxes };
      void this.deps.store
        ?.markSaved(this.deps.imageId, at, outcome.revision, boxes)
        .catch(() => undefined);
      if (this.current !== boxes) {
        this.set({ status: "pending", revision: outcome.revision, message: null });
        this.keep();
        this.schedule(this.deps.debounceMs ?? DEBOUNCE_MS);
      } else {
        this.set({ status: "saved", revision: outcome.revision, message: null });
      }
    } else if (outcome.kind === "conflict") {
      await this.startConflict();
    } else if (outcome.kind === "offline") {
      this.attempt += 1;
      this.set({ status: "offline", message: null });
      if (!this.disposed) this.schedule((this.deps.retryDelayMs ?? retryDelay)(this.attempt));
    } else {
      this.set({ status: "refused", message: outcome.message });
    }
  }

  private async startConflict(): Promise<void> {
    let theirs: { revision: number; boxes: BoxData[] };
    try {
      theirs = await this.deps.load();
    } catch {
      this.attempt += 1;
      this.set({ status: "offline" });
      if (!this.disposed) this.schedule((this.deps.retryDelayMs ?? retryDelay)(this.attempt));
      return;
    }
    const merge = mergeBoxes(this.base.boxes, this.current, theirs.boxes);
    if (isEmptyDiff(merge.theirChanges)) {
      // Saved again with the same boxes (or only reviewed): nothing to settle.
      this.base = { revision: theirs.revision, boxes: merge.theirs };
      this.set({ status: "pending" });
      this.keep();
      return this.run();
    }
    this.set({ status: "conflict", conflict: { revision: theirs.revision, merge } });
  }

  /** Settles a conflict: keep my boxes, take theirs, or the merge of both. */
  resolve(choice: "mine" | "theirs" | "merge"): void {
    const conflict = this.state.conflict;
    if (!conflict) return;
    this.base = { revision: conflict.revision, boxes: conflict.merge.theirs };
    if (choice === "theirs") {
      this.current = conflict.merge.theirs;
      this.currentAt = Math.max(this.now(), this.currentAt + 1);
      this.deps.onReplace(this.current);
      void this.deps.store?.discard(this.deps.imageId).catch(() => undefined);
      this.set({ status: "saved", revision: conflict.revision, conflict: null });
      return;
    }
    if (choice === "merge") {
      this.current = conflict.merge.merged;
      this.currentAt = Math.max(this.now(), this.currentAt + 1);
      this.deps.onReplace(this.current);
    }
    this.set({ status: "pending", revision: conflict.revision, conflict: null });
    this.keep();
    void this.run();
  }

  /**
   * After a refused save: drops the edits the server would not take and shows the
   * server's boxes again. The editor commits them as one more step of its history, so
   * undo brings the discarded edits back (and saving them is refused again).
   */
  async discard(): Promise<void> {
    if (this.state.status !== "refused" || this.running) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.running = true;
    let server: { revision: number; boxes: BoxData[] };
    try {
      server = await this.deps.load();
    } catch {
      this.running = false;
      this.set({ message: "could not reload the saved boxes; try again" });
      return;
    }
    this.running = false;
    if (this.disposed) return;
    const boxes = withIds(server.boxes);
    this.base = { revision: server.revision, boxes };
    this.current = boxes;
    this.currentAt = Math.max(this.now(), this.currentAt + 1);
    this.attempt = 0;
    this.deps.onReplace(boxes);
    void this.deps.store?.discard(this.deps.imageId).catch(() => undefined);
    this.set({ status: "saved", revision: server.revision, message: null, conflict: null });
  }

  /** The browser is online again: try now rather than at the next backoff step. */
  online(): void {
    if (this.state.status === "offline") void this.flush();
  }

  /** The editor closes: a pending edit is saved now; the browser keeps it until then. */
  dispose(): void {
    if (this.disposed || this.stopping !== null) return;
    this.stopping = setTimeout(() => {
      this.stopping = null;
      let last: Promise<void> = Promise.resolve();
      if (this.state.status === "pending" || this.state.status === "offline") last = this.flush();
      else if (this.timer !== null) clearTimeout(this.timer);
      this.disposed = true;
      this.listeners.clear();
      void last.finally(() => this.closedNow());
    }, 0);
  }

  private closedNow: () => void = () => undefined;
  private readonly closed = new Promise<void>((resolve) => {
    this.closedNow = resolve;
  });

  /** Settles once the editor has closed and its last save has had its answer. */
  whenClosed(): Promise<void> {
    return this.closed;
  }
}
