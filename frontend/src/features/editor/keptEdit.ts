// The edit this browser kept for an image after an outage, read from IndexedDB as soon
// as the editor's route is matched (in a new browser profile, opening IndexedDB is what
// an opening waits for last), and handed to the editor's first render once it is in.
import { offlineStore } from "./localStore";
import type { PendingEdit } from "./offline";

export interface KeptRead {
  edit: Promise<PendingEdit | null>;
  /** Set once the read is done: what it found (null: nothing kept, or no IndexedDB). */
  settled?: { edit: PendingEdit | null };
}

const reads = new Map<number, KeptRead>();

/** Starts a fresh read of the image's kept edit; never rejects. */
function readKeptEdit(imageId: number): KeptRead {
  const store = offlineStore();
  const read: KeptRead = {
    edit: (store ? store.get(imageId) : Promise.resolve(undefined)).then(
      (edit) => (read.settled = { edit: edit ?? null }).edit,
      () => (read.settled = { edit: null }).edit,
    ),
  };
  return read;
}

/** For the route: starts the read now (replacing one nobody took). */
export function startKeptEdit(imageId: number): KeptRead {
  const read = readKeptEdit(imageId);
  reads.set(imageId, read);
  // Only the images being opened are kept: a read is taken by its editor at once.
  while (reads.size > 4) reads.delete(reads.keys().next().value as number);
  return read;
}

/** For the editor: the read the route started for this image (once), else a new one. */
export function takeKeptEdit(imageId: number): KeptRead {
  const read = reads.get(imageId);
  reads.delete(imageId);
  return read ?? readKeptEdit(imageId);
}
