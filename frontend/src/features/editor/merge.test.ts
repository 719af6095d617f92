import { describe, expect, it } from "vitest";
import type { BoxData, EditorBox } from "./boxes";
import { diffById, matchToBase, mergeBoxes } from "./merge";

let n = 0;
const id = () => `t${++n}`;
const data = (class_id: number, x: number, y = 0.1, extra: Partial<BoxData> = {}): BoxData => ({
  class_id,
  x,
  y,
  w: 0.1,
  h: 0.1,
  source: "manual",
  confidence: null,
  status: "accepted",
  ...extra,
});
const box = (key: string, d: BoxData): EditorBox => ({ ...d, id: key });
const strip = ({ id: _id, ...rest }: EditorBox): BoxData => rest;

const BASE = [box("a", data(0, 0.1)), box("b", data(1, 0.4)), box("c", data(0, 0.7))];

describe("matching the server's boxes to the base", () => {
  it("finds unchanged, changed, added and removed boxes", () => {
    const theirs = [
      data(0, 0.1), // a unchanged
      data(1, 0.41), // b moved a little
      data(2, 0.1, 0.8), // new
    ]; // c removed
    const { boxes, diff } = matchToBase(BASE, theirs, id);
    expect(boxes.map((b) => b.id).slice(0, 2)).toEqual(["a", "b"]);
    expect(diff.changed.map((c) => c.before.id)).toEqual(["b"]);
    expect(diff.added.map(strip)).toEqual([data(2, 0.1, 0.8)]);
    expect(diff.removed.map((b) => b.id)).toEqual(["c"]);
  });

  it("a re-classed box in the same place is a change, not a removal and an addition", () => {
    const { diff } = matchToBase(BASE, [data(0, 0.1), data(0, 0.4), data(0, 0.7)], id);
    expect(diff.changed).toHaveLength(1);
    expect(diff.changed[0]?.before.class_id).toBe(1);
    expect(diff.changed[0]?.after.class_id).toBe(0);
    expect(diff.added).toEqual([]);
    expect(diff.removed).toEqual([]);
  });

  it("tells my changes by id", () => {
    const mine = [BASE[0] as EditorBox, { ...(BASE[1] as EditorBox), class_id: 0 }, box("d", data(3, 0.9))];
    const diff = diffById(BASE, mine);
    expect(diff.added.map((b) => b.id)).toEqual(["d"]);
    expect(diff.removed.map((b) => b.id)).toEqual(["c"]);
    expect(diff.changed.map((c) => c.after.id)).toEqual(["b"]);
  });
});

describe("three-way merge", () => {
  it("applies my changes on top of theirs when they touch different boxes", () => {
    // Mine: re-class a, add d. Theirs: remove c, add e.
    const mine = [{ ...(BASE[0] as EditorBox), class_id: 2 }, BASE[1] as EditorBox, BASE[2] as EditorBox, box("d", data(3, 0.9))];
    const theirs = [data(0, 0.1), data(1, 0.4), data(4, 0.5, 0.5)];
    const result = mergeBoxes(BASE, mine, theirs, id);
    expect(result.conflicts).toEqual([]);
    expect(result.merged.map(strip)).toEqual([data(2, 0.1), data(1, 0.4), data(4, 0.5, 0.5), data(3, 0.9)]);
    expect(result.theirChanges.added).toHaveLength(1);
    expect(result.theirChanges.removed.map((b) => b.id)).toEqual(["c"]);
    expect(result.myChanges.added.map((b) => b.id)).toEqual(["d"]);
  });

  it("keeps mine where both changed one box, and lists it", () => {
    const mine = [{ ...(BASE[0] as EditorBox), class_id: 2 }, BASE[1] as EditorBox, BASE[2] as EditorBox];
    const theirs = [data(1, 0.1), data(1, 0.4), data(0, 0.7)];
    const result = mergeBoxes(BASE, mine, theirs, id);
    expect(result.conflicts).toHaveLength(1);
    expect(result.conflicts[0]?.kind).toBe("both-changed");
    expect(result.merged.map((b) => b.class_id)).toEqual([2, 1, 0]);
  });

  it("loses no work when one side removed a box the other changed", () => {
    // Mine removes b; theirs moved b. Mine moved c; theirs removed c.
    const mine = [BASE[0] as EditorBox, { ...(BASE[2] as EditorBox), y: 0.5 }];
    const theirs = [data(0, 0.1), data(1, 0.42)];
    const result = mergeBoxes(BASE, mine, theirs, id);
    expect(result.conflicts.map((c) => c.kind).sort()).toEqual(["changed-removed", "removed-changed"]);
    expect(result.merged.map(strip)).toEqual([data(0, 0.1), data(1, 0.42), data(0, 0.7, 0.5)]);
  });

  it("drops a box both removed, and keeps both sides' additions", () => {
    const mine = [BASE[0] as EditorBox, BASE[1] as EditorBox, box("m", data(2, 0.2, 0.6))];
    const theirs = [data(0, 0.1), data(1, 0.4), data(3, 0.8, 0.8)];
    const result = mergeBoxes(BASE, mine, theirs, id);
    expect(result.merged).toHaveLength(4);
    expect(result.merged.map((b) => b.class_id)).toEqual([0, 1, 3, 2]);
  });

  it("with nothing changed by me, the merge is theirs", () => {
    const theirs = [data(0, 0.1), data(5, 0.3, 0.3)];
    const result = mergeBoxes(BASE, BASE, theirs, id);
    expect(result.merged.map(strip)).toEqual(theirs);
    expect(result.merged).toEqual(result.theirs);
  });
});
