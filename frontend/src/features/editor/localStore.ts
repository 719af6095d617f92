// This tab's handle on the kept edits (null where IndexedDB is unavailable).
import { type OfflineStore, openOfflineStore } from "./offline";

let store: OfflineStore | null | undefined;

export function offlineStore(): OfflineStore | null {
  if (store === undefined) store = typeof indexedDB === "undefined" ? null : openOfflineStore();
  return store;
}

/** The images whose editor is open in this tab: each saves its own kept edit. */
export const openImages = new Set<number>();
