import { describe, expect, it } from "vitest";
import { canRedo, canUndo, createHistory, record, redo, undo } from "./history";

describe("undo/redo history", () => {
  it("undoes and redoes steps in order", () => {
    let h = createHistory<string[]>([]);
    const a = ["a"];
    const ab = ["a", "b"];
    h = record(h, a);
    h = record(h, ab);
    expect(canUndo(h)).toBe(true);
    h = undo(h);
    expect(h.present).toBe(a);
    h = undo(h);
    expect(h.present).toEqual([]);
    expect(canUndo(h)).toBe(false);
    expect(undo(h)).toBe(h);
    h = redo(h);
    h = redo(h);
    expect(h.present).toBe(ab);
    expect(canRedo(h)).toBe(false);
    expect(redo(h)).toBe(h);
  });

  it("a new edit after an undo drops the redo branch", () => {
    let h = createHistory(0);
    h = record(h, 1);
    h = record(h, 2);
    h = undo(h);
    h = record(h, 3);
    expect(h.present).toBe(3);
    expect(canRedo(h)).toBe(false);
    expect(undo(h).present).toBe(1);
  });

  it("records nothing for a no-op and keeps at most `limit` steps", () => {
    const same = ["x"];
    let h = createHistory(same);
    expect(record(h, same)).toBe(h);
    for (let i = 0; i < 10; i++) h = record(h, [String(i)], 3);
    expect(h.past).toHaveLength(3);
    expect(h.past[0]).toEqual(["6"]);
  });
});
