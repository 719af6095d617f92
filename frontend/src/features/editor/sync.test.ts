import "fake-indexeddb/auto";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { BoxData, EditorBox } from "./boxes";
import { addBox } from "./edits";
import { openOfflineStore, type SaveOutcome } from "./offline";
import { ImageSync } from "./sync";

const box = (id: string, x: number, class_id = 0): EditorBox => ({
  id,
  class_id,
  x,
  y: 0.1,
  w: 0.1,
  h: 0.1,
  source: "manual",
  confidence: null,
  status: "accepted",
});

let dbs = 0;
function setup(answers: SaveOutcome[], theirs: { revision: number; boxes: BoxData[] } = { revision: 9, boxes: [] }) {
  const store = openOfflineStore(`sync-${++dbs}`);
  const saves: { revision: number; boxes: BoxData[] }[] = [];
  const replaced: EditorBox[][] = [];
  const base = [box("a", 0.1)];
  const sync = new ImageSync(
    {
      imageId: 5,
      projectId: 1,
      store,
      save: async (revision, boxes) => {
        saves.push({ revision, boxes });
        return answers.shift() ?? { kind: "saved", revision: revision + 1 };
      },
      load: async () => theirs,
      onReplace: (boxes) => replaced.push(boxes),
      debounceMs: 500,
      retryDelayMs: () => 1000,
    },
    { revision: 3, baseBoxes: base, boxes: base },
  );
  sync.start();
  return { sync, store, saves, replaced, base };
}

// Only the sync's timers are faked: IndexedDB (fake-indexeddb) runs on its own.
beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
});
const settle = () => new Promise((resolve) => setImmediate(resolve));
afterEach(() => {
  vi.useRealTimers();
});

describe("saving an image's boxes", () => {
  it("debounces edits into one save against the base revision", async () => {
    const { sync, saves, base, store } = setup([]);
    const one = addBox(base, { x: 0.5, y: 0.5, w: 0.1, h: 0.1 }, 1);
    sync.edit(one);
    sync.edit([...one, box("c", 0.7)]);
    expect(sync.getState().status).toBe("pending");
    await vi.advanceTimersByTimeAsync(499);
    expect(saves).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(10);
    expect(saves).toHaveLength(1);
    expect(saves[0]?.revision).toBe(3);
    expect(saves[0]?.boxes).toHaveLength(3);
    expect(sync.getState()).toMatchObject({ status: "saved", revision: 4 });
    expect(sync.dirty).toBe(false);
    await settle();
    expect(await store.get(5)).toBeUndefined(); // nothing left to keep
  });

  it("keeps the edit in the browser while offline and saves it when the server is back", async () => {
    const { sync, saves, base, store } = setup([{ kind: "offline" }, { kind: "offline" }]);
    sync.edit([...base, box("b", 0.4)]);
    await vi.advanceTimersByTimeAsync(500);
    expect(sync.getState().status).toBe("offline");
    await settle();
    expect((await store.get(5))?.boxes.map((b) => b.id)).toEqual(["a", "b"]);
    await vi.advanceTimersByTimeAsync(1000); // second try: still offline
    expect(saves).toHaveLength(2);
    sync.online(); // the browser says it is back: try now
    await vi.advanceTimersByTimeAsync(0);
    expect(saves).toHaveLength(3);
    expect(sync.getState()).toMatchObject({ status: "saved", revision: 4 });
    await settle();
    expect(await store.get(5)).toBeUndefined();
  });

  it("on 409 shows the merge, and a merge saves both sides' work on the new revision", async () => {
    const theirs = { revision: 9, boxes: [{ ...box("x", 0.1), class_id: 0 }, box("y", 0.8, 2)] as BoxData[] };
    const { sync, saves, base, replaced } = setup([{ kind: "conflict", currentRevision: 9 }], theirs);
    sync.edit([...base, box("mine", 0.4, 1)]);
    await vi.advanceTimersByTimeAsync(500);
    const state = sync.getState();
    expect(state.status).toBe("conflict");
    expect(state.conflict?.merge.theirChanges.added).toHaveLength(1);
    expect(state.conflict?.merge.myChanges.added).toHaveLength(1);
    // Edits made while the dialog is open wait for it.
    sync.resolve("merge");
    await vi.advanceTimersByTimeAsync(0);
    expect(replaced).toHaveLength(1);
    expect(replaced[0]?.map((b) => b.class_id)).toEqual([0, 2, 1]);
    expect(saves.at(-1)?.revision).toBe(9);
    expect(saves.at(-1)?.boxes).toHaveLength(3);
    expect(sync.getState()).toMatchObject({ status: "saved", revision: 10, conflict: null });
  });

  it("taking theirs replaces mine and saves nothing", async () => {
    const theirs = { revision: 9, boxes: [box("t", 0.3, 2)] as BoxData[] };
    const { sync, saves, base, replaced } = setup([{ kind: "conflict", currentRevision: 9 }], theirs);
    sync.edit([...base, box("mine", 0.4, 1)]);
    await vi.advanceTimersByTimeAsync(500);
    sync.resolve("theirs");
    await vi.advanceTimersByTimeAsync(1000);
    expect(saves).toHaveLength(1);
    expect(replaced[0]?.map((b) => b.class_id)).toEqual([2]);
    expect(sync.getState()).toMatchObject({ status: "saved", revision: 9 });
  });

  it("a refused save says why and stays unsaved", async () => {
    const { sync, base } = setup([{ kind: "refused", message: "boxes.0.class_id: 7 is out of range" }]);
    sync.edit([...base, box("b", 0.4, 7)]);
    await vi.advanceTimersByTimeAsync(500);
    expect(sync.getState()).toMatchObject({ status: "refused", message: "boxes.0.class_id: 7 is out of range" });
    expect(sync.dirty).toBe(true);
  });

  it("discarding after a refused save shows the server's boxes and keeps nothing", async () => {
    const server = { revision: 6, boxes: [box("s", 0.3, 2)] as BoxData[] };
    const { sync, saves, base, store, replaced } = setup(
      [{ kind: "refused", message: "boxes.0.class_id: 7 is out of range" }],
      server,
    );
    const mine = [...base, box("b", 0.4, 7)];
    sync.edit(mine);
    await vi.advanceTimersByTimeAsync(500);
    expect(sync.getState().status).toBe("refused");
    await settle();
    expect((await store.get(5))?.boxes.map((b) => b.id)).toEqual(["a", "b"]);
    await sync.discard();
    expect(replaced).toHaveLength(1);
    expect(replaced[0]?.map((b) => [b.x, b.class_id])).toEqual([[0.3, 2]]);
    expect(sync.getState()).toMatchObject({ status: "saved", revision: 6, message: null });
    expect(sync.dirty).toBe(false);
    await settle();
    expect(await store.get(5)).toBeUndefined();
    // The editor's history still holds the discarded edit: undoing it saves it again,
    // against the server's revision.
    sync.edit(mine);
    await vi.advanceTimersByTimeAsync(500);
    expect(saves.at(-1)?.revision).toBe(6);
  });

  it("a failed reload while discarding keeps the edit and says so", async () => {
    const { sync, base, replaced } = setup([{ kind: "refused", message: "nope" }]);
    sync.edit([...base, box("b", 0.4, 7)]);
    await vi.advanceTimersByTimeAsync(500);
    const failing = sync as unknown as { deps: { load: () => Promise<never> } };
    failing.deps.load = async () => {
      throw new TypeError("network");
    };
    await sync.discard();
    expect(replaced).toHaveLength(0);
    expect(sync.getState().status).toBe("refused");
    expect(sync.getState().message).toMatch(/could not reload/);
    expect(sync.dirty).toBe(true);
  });

  it("discard does nothing unless a save was refused", async () => {
    const { sync, base, replaced } = setup([]);
    sync.edit([...base, box("b", 0.4)]);
    await sync.discard();
    expect(replaced).toHaveLength(0);
    expect(sync.getState().status).toBe("pending");
  });
});
