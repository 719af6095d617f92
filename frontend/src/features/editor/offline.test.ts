import "fake-indexeddb/auto";
import { afterEach, describe, expect, it } from "vitest";
import type { EditorBox } from "./boxes";
import { flushPending, type OfflineStore, openOfflineStore, type PendingEdit, type SaveOutcome } from "./offline";

const B = (id: string, x = 0.1): EditorBox => ({
  id,
  class_id: 0,
  x,
  y: 0.1,
  w: 0.1,
  h: 0.1,
  source: "manual",
  confidence: null,
  status: "accepted",
});
const edit = (imageId: number, updatedAt: number, boxes = [B("a")]): PendingEdit => ({
  imageId,
  projectId: 1,
  baseRevision: 3,
  baseBoxes: [],
  boxes,
  updatedAt,
});

let stores: OfflineStore[] = [];
let dbCounter = 0;
function fresh(): OfflineStore {
  const store = openOfflineStore(`test-${++dbCounter}`);
  stores.push(store);
  return store;
}
afterEach(() => {
  for (const s of stores) s.close();
  stores = [];
});

describe("edits kept in IndexedDB", () => {
  it("keeps the latest edit per image, across reopening the database", async () => {
    const name = `test-${++dbCounter}`;
    const first = openOfflineStore(name);
    await first.put(edit(7, 100));
    await first.put(edit(7, 200, [B("a"), B("b")]));
    await first.put(edit(7, 150, [])); // late write of an older edit: ignored
    await first.put(edit(8, 100));
    first.close();
    const again = openOfflineStore(name);
    stores.push(again);
    expect((await again.get(7))?.boxes.map((b) => b.id)).toEqual(["a", "b"]);
    expect((await again.all()).map((e) => e.imageId)).toEqual([7, 8]);
  });

  it("forgets an edit once saved, but keeps a newer one, moved onto the saved revision", async () => {
    const store = fresh();
    await store.put(edit(1, 100));
    await store.markSaved(1, 100, 4, [B("a")]);
    expect(await store.get(1)).toBeUndefined();

    await store.put(edit(2, 100));
    await store.put(edit(2, 200, [B("a", 0.5)]));
    await store.markSaved(2, 100, 4, [B("a")]);
    const kept = await store.get(2);
    expect(kept?.updatedAt).toBe(200);
    expect(kept?.baseRevision).toBe(4);
    expect(kept?.baseBoxes.map((b) => b.x)).toEqual([0.1]);
  });

  it("flushes what it keeps when the server is back, and keeps conflicts and refusals", async () => {
    const store = fresh();
    await store.put(edit(1, 100));
    await store.put(edit(2, 100));
    await store.put(edit(3, 100));
    await store.put(edit(4, 100));
    const outcomes: Record<number, SaveOutcome> = {
      1: { kind: "saved", revision: 4 },
      2: { kind: "conflict", currentRevision: 5 },
      3: { kind: "refused", message: "class out of range" },
    };
    const tried: number[] = [];
    const report = await flushPending(
      store,
      async (e) => {
        tried.push(e.imageId);
        return outcomes[e.imageId] ?? { kind: "saved", revision: 1 };
      },
      new Set([4]), // open in an editor, which saves it itself
    );
    expect(tried).toEqual([1, 2, 3]);
    expect(report).toEqual({ saved: [1], conflicts: [2], offline: [], refused: [3] });
    expect((await store.all()).map((e) => e.imageId)).toEqual([2, 3, 4]);
  });

  it("stops at the first offline answer and keeps everything", async () => {
    const store = fresh();
    await store.put(edit(1, 100));
    await store.put(edit(2, 100));
    let calls = 0;
    const report = await flushPending(store, async () => {
      calls += 1;
      return { kind: "offline" };
    });
    expect(calls).toBe(1);
    expect(report.offline).toEqual([1]);
    expect(await store.all()).toHaveLength(2);
  });
});

describe("a browser that never kept an edit", () => {
  it("reads without creating the database; the first kept edit creates it", async () => {
    const name = `test-${++dbCounter}`;
    const store = openOfflineStore(name);
    stores.push(store);
    const listed = async () => (await indexedDB.databases()).some((d) => d.name === name);
    expect(await store.get(1)).toBeUndefined();
    expect(await store.all()).toEqual([]);
    await store.markSaved(1, 5, 4, []);
    await store.discard(1);
    expect(await listed()).toBe(false);
    await store.put(edit(1, 5));
    expect(await listed()).toBe(true);
    // Another tab's store (its own handle) finds it.
    const other = openOfflineStore(name);
    stores.push(other);
    expect((await other.get(1))?.updatedAt).toBe(5);
  });
});
