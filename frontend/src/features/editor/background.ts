// The app-wide saver of edits this browser kept for images whose editor is not open
// (the tab was closed, the network or the server was away). It runs when the app
// starts, when the browser comes back online, when an editor opens, and again a while
// after a try that found the server away. Each edit is saved against the revision it
// started from; a 409 leaves the edit kept (the editor's merge settles it when the
// image is opened) and is listed for a notice that links to the image.
import { loadAnnotations, saveAnnotations } from "./api";
import { type BoxData, sameBox, toData } from "./boxes";
import { offlineStore, openImages } from "./localStore";
import { flushPending, type OfflineStore, type PendingEdit, type SaveOutcome } from "./offline";

export interface KeptConflict {
  imageId: number;
  projectId: number;
}

export interface BackgroundDeps {
  store: OfflineStore;
  save(edit: PendingEdit): Promise<SaveOutcome>;
  /** the image's boxes on the server now (after a 409) */
  load(imageId: number): Promise<{ revision: number; boxes: BoxData[] }>;
  /** an image whose editor is open saves its own edit */
  isOpen(imageId: number): boolean;
  /** after a try that found the server away, the next one (ms) */
  retryMs?: number;
}

export const RETRY_MS = 30_000;

export class BackgroundSaver {
  private readonly deps: BackgroundDeps;
  private running: Promise<void> | null = null;
  private again = false;
  private retry: ReturnType<typeof setTimeout> | null = null;
  private conflicts: KeptConflict[] = [];
  private readonly listeners = new Set<(conflicts: KeptConflict[]) => void>();

  constructor(deps: BackgroundDeps) {
    this.deps = deps;
  }

  /** The kept edits that the server refused with 409, for a notice. */
  getConflicts = (): KeptConflict[] => this.conflicts;

  subscribe(listener: (conflicts: KeptConflict[]) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Saves every kept edit of a closed image now; one pass at a time (a call during
   * a pass runs one more pass after it). */
  flush(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.pass();
        } while (this.again);
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }

  /** Stops the timer of a pending retry. */
  stop(): void {
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
  }

  private async pass(): Promise<void> {
    const { store } = this.deps;
    const open = new Set((await store.all()).map((edit) => edit.imageId).filter((id) => this.deps.isOpen(id)));
    let report;
    try {
      report = await flushPending(store, (edit) => this.deps.save(edit), open);
    } catch {
      return; // IndexedDB failed: nothing was lost, the next pass tries again
    }
    // A 409 whose server boxes are the kept ones: the edit was saved already (the tab
    // closed before it could forget it), so there is nothing to settle.
    for (const imageId of report.conflicts) {
      const edit = await store.get(imageId);
      if (!edit) continue;
      try {
        const server = await this.deps.load(imageId);
        const same =
          server.boxes.length === edit.boxes.length && server.boxes.every((b, i) => sameBox(b, edit.boxes[i] as BoxData));
        if (same) await store.markSaved(imageId, edit.updatedAt, server.revision, edit.boxes);
      } catch {
        // the server went away: the edit stays kept, as a conflict to look at
      }
    }
    const left = new Map((await store.all()).map((edit) => [edit.imageId, edit]));
    const saved = new Set(report.saved);
    const conflicted = new Set([...this.conflicts.map((c) => c.imageId), ...report.conflicts]);
    const next: KeptConflict[] = [];
    for (const imageId of [...conflicted].sort((a, b) => a - b)) {
      const edit = left.get(imageId);
      if (edit && !saved.has(imageId) && !open.has(imageId)) next.push({ imageId, projectId: edit.projectId });
    }
    this.setConflicts(next);
    this.stop();
    if (report.offline.length > 0) {
      this.retry = setTimeout(() => {
        this.retry = null;
        void this.flush();
      }, this.deps.retryMs ?? RETRY_MS);
    }
  }

  private setConflicts(next: KeptConflict[]): void {
    const same =
      next.length === this.conflicts.length &&
      next.every((c, i) => c.imageId === this.conflicts[i]?.imageId && c.projectId === this.conflicts[i]?.projectId);
    if (same) return;
    this.conflicts = next;
    for (const listener of this.listeners) listener(next);
  }
}

let saver: BackgroundSaver | null | undefined;

/** This tab's saver (null where IndexedDB is unavailable). */
export function backgroundSaver(): BackgroundSaver | null {
  if (saver === undefined) {
    const store = offlineStore();
    saver = store
      ? new BackgroundSaver({
          store,
          save: (edit) => saveAnnotations(edit.imageId, edit.baseRevision, edit.boxes.map(toData)),
          load: (imageId) => loadAnnotations(imageId),
          isOpen: (imageId) => openImages.has(imageId),
        })
      : null;
  }
  return saver;
}

/**
 * Starts saving in the background for the app's lifetime: now, and whenever the
 * browser comes back online. Returns the stop function.
 */
export function startBackgroundSaving(onConflicts: (conflicts: KeptConflict[]) => void): () => void {
  const current = backgroundSaver();
  if (!current) return () => undefined;
  const unsubscribe = current.subscribe(onConflicts);
  onConflicts(current.getConflicts());
  const online = () => void current.flush();
  window.addEventListener("online", online);
  void current.flush();
  return () => {
    unsubscribe();
    window.removeEventListener("online", online);
  };
}
