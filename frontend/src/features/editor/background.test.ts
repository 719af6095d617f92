import "fake-indexeddb/auto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { BackgroundSaver, type KeptConflict } from "./background";
import type { EditorBox } from "./boxes";
import { type OfflineStore, openOfflineStore, type PendingEdit, type SaveOutcome } from "./offline";

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
const edit = (imageId: number, projectId = 1, baseRevision = 3): PendingEdit => ({
  imageId,
  projectId,
  baseRevision,
  baseBoxes: [],
  boxes: [B(`b${imageId}`)],
  updatedAt: 1000 + imageId,
});

let stores: OfflineStore[] = [];
let n = 0;
function setup(
  answer: (edit: PendingEdit) => SaveOutcome | Promise<SaveOutcome>,
  open: number[] = [],
  server: (imageId: number) => { revision: number; boxes: EditorBox[] } = () => ({ revision: 8, boxes: [B("other", 0.7)] }),
) {
  const store = openOfflineStore(`background-${++n}`);
  stores.push(store);
  const saves: { imageId: number; baseRevision: number }[] = [];
  const notices: KeptConflict[][] = [];
  const saver = new BackgroundSaver({
    store,
    save: async (e) => {
      saves.push({ imageId: e.imageId, baseRevision: e.baseRevision });
      return answer(e);
    },
    load: async (id) => server(id),
    isOpen: (id) => open.includes(id),
    retryMs: 1000,
  });
  saver.subscribe((c) => notices.push(c));
  return { store, saver, saves, notices };
}
afterEach(() => {
  for (const s of stores) s.close();
  stores = [];
  vi.useRealTimers();
});

describe("the app-wide saver of kept edits", () => {
  it("saves the kept edits of every closed image against their base revision", async () => {
    const { store, saver, saves, notices } = setup(async (e) => ({ kind: "saved", revision: e.baseRevision + 1 }));
    await store.put(edit(1, 1, 3));
    await store.put(edit(2, 2, 7));
    await saver.flush();
    expect(saves).toEqual([
      { imageId: 1, baseRevision: 3 },
      { imageId: 2, baseRevision: 7 },
    ]);
    expect(await store.all()).toEqual([]);
    expect(notices).toEqual([]);
  });

  it("leaves an open image's edit to its editor", async () => {
    const { store, saver, saves } = setup(async () => ({ kind: "saved", revision: 9 }), [2]);
    await store.put(edit(1));
    await store.put(edit(2));
    await saver.flush();
    expect(saves.map((s) => s.imageId)).toEqual([1]);
    expect((await store.all()).map((e) => e.imageId)).toEqual([2]);
  });

  it("on 409 keeps the edit and lists it for the notice, until it is settled", async () => {
    let conflict = true;
    const { store, saver, notices } = setup(async (e) =>
      e.imageId === 2 && conflict ? { kind: "conflict", currentRevision: 8 } : { kind: "saved", revision: 4 },
    );
    await store.put(edit(1));
    await store.put(edit(2, 5));
    await saver.flush();
    expect((await store.all()).map((e) => e.imageId)).toEqual([2]);
    expect(saver.getConflicts()).toEqual([{ imageId: 2, projectId: 5 }]);
    expect(notices).toHaveLength(1);
    // Still a conflict on the next pass: kept, and no new notice.
    await saver.flush();
    expect(notices).toHaveLength(1);
    expect((await store.all()).map((e) => e.imageId)).toEqual([2]);
    // Settled in the editor (the kept edit is gone): the notice clears.
    conflict = false;
    await store.discard(2);
    await saver.flush();
    expect(saver.getConflicts()).toEqual([]);
    expect(notices.at(-1)).toEqual([]);
  });

  it("forgets an edit whose 409 shows it was saved already (the tab closed before it could)", async () => {
    const { store, saver, notices } = setup(
      async () => ({ kind: "conflict", currentRevision: 4 }),
      [],
      (id) => ({ revision: 4, boxes: [B(`server-id-${id}`)].map((b) => ({ ...b, id: "other" })) }),
    );
    await store.put(edit(1));
    await saver.flush();
    expect(await store.all()).toEqual([]);
    expect(notices).toEqual([]);
  });

  it("stops at a server that is away, keeps everything and tries again later", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    let away = true;
    const { store, saver, saves } = setup(async () => (away ? { kind: "offline" } : { kind: "saved", revision: 4 }));
    await store.put(edit(1));
    await store.put(edit(2));
    await saver.flush();
    expect(saves).toHaveLength(1); // the rest would fail the same way
    expect(await store.all()).toHaveLength(2);
    away = false;
    await vi.advanceTimersByTimeAsync(1000);
    await vi.waitFor(async () => expect(await store.all()).toEqual([]));
    expect(saves.map((s) => s.imageId)).toEqual([1, 1, 2]);
    saver.stop();
  });

  it("runs one pass at a time: a flush during a pass runs once more after it", async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const { store, saver, saves } = setup(async () => {
      await gate;
      return { kind: "saved", revision: 4 };
    });
    await store.put(edit(1));
    const first = saver.flush();
    const second = saver.flush();
    const third = saver.flush();
    release();
    await Promise.all([first, second, third]);
    expect(saves).toHaveLength(1); // the second pass found nothing left
    expect(await store.all()).toEqual([]);
  });
});
