// Edits not yet saved, kept in this browser (IndexedDB) so that a closed tab, a lost
// network or a stopped server loses nothing: one record per image, the latest edit
// with the revision and boxes it started from (a later merge needs both).
import { type DBSchema, type IDBPDatabase, openDB } from "idb";
import type { EditorBox } from "./boxes";

export interface PendingEdit {
  imageId: number;
  projectId: number;
  baseRevision: number;
  baseBoxes: EditorBox[];
  boxes: EditorBox[];
  /** when this edit was made (ms); newer edits replace older ones */
  updatedAt: number;
}

interface Schema extends DBSchema {
  pending: { key: number; value: PendingEdit; indexes: { project: number } };
}

export const DB_NAME = "oculab-editor";

export interface OfflineStore {
  put(edit: PendingEdit): Promise<void>;
  get(imageId: number): Promise<PendingEdit | undefined>;
  all(): Promise<PendingEdit[]>;
  /**
   * The edit made at `updatedAt` was saved as `revision`: forget it, or, if a newer
   * edit was kept meanwhile, move that one onto what was saved.
   */
  markSaved(
    imageId: number,
    updatedAt: number,
    revision: number,
    savedBoxes: EditorBox[],
  ): Promise<void>;
  /** Forgets the image's edit (the user took the other version). */
  discard(imageId: number): Promise<void>;
  close(): void;
}

/**
 * Whether the database may exist: false only when the browser lists its databases and
 * this one is not among them. Reading needs no database that was never written to, and
 * opening it would create it: in a new browser profile that creation is the slowest
 * thing an opening of the editor waits for.
 */
async function mayExist(name: string): Promise<boolean> {
  if (typeof indexedDB.databases !== "function") return true;
  try {
    return (await indexedDB.databases()).some((database) => database.name === name);
  } catch {
    return true;
  }
}

export function openOfflineStore(name = DB_NAME): OfflineStore {
  let db: Promise<IDBPDatabase<Schema>> | null = null;
  const open = () => {
    db ??= openDB<Schema>(name, 1, {
      upgrade(database) {
        const store = database.createObjectStore("pending", { keyPath: "imageId" });
        store.createIndex("project", "projectId");
      },
    });
    return db;
  };
  // For reads and removals: the database once it has been opened here or exists, else
  // null (nothing was ever kept in this browser).
  const existing = async () => (db !== null || (await mayExist(name)) ? open() : null);
  return {
    async put(edit) {
      const database = await open();
      const tx = database.transaction("pending", "readwrite");
      const current = await tx.store.get(edit.imageId);
      // Writes may finish out of order; an older edit never replaces a newer one.
      if (!current || current.updatedAt <= edit.updatedAt) await tx.store.put(edit);
      await tx.done;
    },
    async get(imageId) {
      return (await existing())?.get("pending", imageId);
    },
    async all() {
      return (await existing())?.getAll("pending") ?? [];
    },
    async markSaved(imageId, updatedAt, revision, savedBoxes) {
      const database = await existing();
      if (!database) return; // nothing was kept
      const tx = database.transaction("pending", "readwrite");
      const current = await tx.store.get(imageId);
      if (current && current.updatedAt <= updatedAt) await tx.store.delete(imageId);
      else if (current) {
        await tx.store.put({ ...current, baseRevision: revision, baseBoxes: savedBoxes });
      }
      await tx.done;
    },
    async discard(imageId) {
      await (await existing())?.delete("pending", imageId);
    },
    close() {
      void db?.then((database) => database.close());
      db = null;
    },
  };
}

export type SaveOutcome =
  | { kind: "saved"; revision: number }
  | { kind: "conflict"; currentRevision: number | null }
  | { kind: "offline" }
  | { kind: "refused"; message: string };

export interface FlushReport {
  saved: number[];
  conflicts: number[];
  offline: number[];
  refused: number[];
}

/**
 * Saves every kept edit (but those in `skip`: an open editor saves its own). A conflict
 * or a refusal stays kept, for the editor to show when that image is opened.
 */
export async function flushPending(
  store: OfflineStore,
  save: (edit: PendingEdit) => Promise<SaveOutcome>,
  skip: ReadonlySet<number> = new Set(),
): Promise<FlushReport> {
  const report: FlushReport = { saved: [], conflicts: [], offline: [], refused: [] };
  for (const edit of await store.all()) {
    if (skip.has(edit.imageId)) continue;
    const outcome = await save(edit);
    if (outcome.kind === "saved") {
      await store.markSaved(edit.imageId, edit.updatedAt, outcome.revision, edit.boxes);
      report.saved.push(edit.imageId);
    } else if (outcome.kind === "conflict") report.conflicts.push(edit.imageId);
    else if (outcome.kind === "offline") {
      report.offline.push(edit.imageId);
      break; // the server is away: the rest would fail the same way
    } else report.refused.push(edit.imageId);
  }
  return report;
}
