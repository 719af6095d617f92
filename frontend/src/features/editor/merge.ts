// A conflicting save, merged three ways: `base` is what this user started from, `mine`
// what they have now, `theirs` what another person saved meanwhile. The API's boxes
// have no ids, so theirs are matched to the base: equal boxes are unchanged, then the
// closest pairs (same place, or overlapping most) are one box changed, and the rest
// were added or removed. Nothing of either side is dropped without being listed.
import { type BoxData, type EditorBox, newId, sameBox, toData } from "./boxes";
import { iou } from "./geometry";

export interface Change {
  before: EditorBox;
  after: EditorBox;
}
export interface Diff {
  added: EditorBox[];
  removed: EditorBox[];
  changed: Change[];
}
export interface Conflict {
  /** both changed one box; mine removed one they changed; mine changed one they removed */
  kind: "both-changed" | "removed-changed" | "changed-removed";
  mine: EditorBox | null;
  theirs: EditorBox | null;
}
export interface MergeResult {
  merged: EditorBox[];
  /** theirs, with the ids of the base boxes they continue */
  theirs: EditorBox[];
  theirChanges: Diff;
  myChanges: Diff;
  /** kept: mine where both changed a box, the surviving side where one removed it */
  conflicts: Conflict[];
}

const PAIR_MIN_IOU = 0.3;

export const isEmptyDiff = (diff: Diff) =>
  diff.added.length === 0 && diff.removed.length === 0 && diff.changed.length === 0;

/** What changed from `base` to `mine`, by id (both carry the editor's ids). */
export function diffById(base: readonly EditorBox[], mine: readonly EditorBox[]): Diff {
  const before = new Map(base.map((box) => [box.id, box]));
  const diff: Diff = { added: [], removed: [], changed: [] };
  const seen = new Set<string>();
  for (const box of mine) {
    seen.add(box.id);
    const old = before.get(box.id);
    if (!old) diff.added.push(box);
    else if (!sameBox(old, box)) diff.changed.push({ before: old, after: box });
  }
  for (const box of base) if (!seen.has(box.id)) diff.removed.push(box);
  return diff;
}

/** Gives the server's boxes the ids of the base boxes they continue, and says how. */
export function matchToBase(
  base: readonly EditorBox[],
  theirs: readonly BoxData[],
  makeId: () => string = newId,
): { boxes: EditorBox[]; diff: Diff } {
  const ids: (string | null)[] = theirs.map(() => null);
  const free = new Set(base.map((_, i) => i));
  // 1. Equal boxes are the same box, unchanged (first come, first matched).
  theirs.forEach((box, t) => {
    for (const b of free) {
      if (sameBox(base[b] as EditorBox, box)) {
        ids[t] = (base[b] as EditorBox).id;
        free.delete(b);
        return;
      }
    }
  });
  // 2. The closest remaining pairs are one box changed (moved, resized, re-classed).
  const pairs: { t: number; b: number; score: number }[] = [];
  theirs.forEach((box, t) => {
    if (ids[t] !== null) return;
    for (const b of free) {
      const score = iou(base[b] as EditorBox, box);
      if (score >= PAIR_MIN_IOU) pairs.push({ t, b, score });
    }
  });
  pairs.sort((p, q) => q.score - p.score || p.t - q.t || p.b - q.b);
  const changedFrom = new Map<number, EditorBox>();
  for (const { t, b } of pairs) {
    if (ids[t] !== null || !free.has(b)) continue;
    const old = base[b] as EditorBox;
    ids[t] = old.id;
    changedFrom.set(t, old);
    free.delete(b);
  }
  const diff: Diff = { added: [], removed: [], changed: [] };
  const boxes = theirs.map((box, t) => {
    const made: EditorBox = { ...toData(box), id: ids[t] ?? makeId() };
    const old = changedFrom.get(t);
    if (old) diff.changed.push({ before: old, after: made });
    else if (ids[t] === null) diff.added.push(made);
    return made;
  });
  for (const b of [...free].sort((p, q) => p - q)) diff.removed.push(base[b] as EditorBox);
  return { boxes, diff };
}

/**
 * Theirs with my changes applied on top. Where both sides touched one box, mine wins
 * and the conflict is listed; a box one side removed and the other changed stays (the
 * changed one), so no work disappears in a merge.
 */
export function mergeBoxes(
  base: readonly EditorBox[],
  mine: readonly EditorBox[],
  theirsFromServer: readonly BoxData[],
  makeId: () => string = newId,
): MergeResult {
  const { boxes: theirs, diff: theirChanges } = matchToBase(base, theirsFromServer, makeId);
  const myChanges = diffById(base, mine);
  const theirChanged = new Map(theirChanges.changed.map((c) => [c.after.id, c.after]));
  const theirRemoved = new Set(theirChanges.removed.map((box) => box.id));
  const myChanged = new Map(myChanges.changed.map((c) => [c.after.id, c.after]));
  const myRemoved = new Set(myChanges.removed.map((box) => box.id));
  const conflicts: Conflict[] = [];

  const merged: EditorBox[] = [];
  for (const box of theirs) {
    const mineNow = myChanged.get(box.id);
    if (myRemoved.has(box.id)) {
      if (theirChanged.has(box.id)) {
        conflicts.push({ kind: "removed-changed", mine: null, theirs: box });
        merged.push(box);
      }
      continue;
    }
    if (mineNow) {
      if (theirChanged.has(box.id) && !sameBox(mineNow, box)) {
        conflicts.push({ kind: "both-changed", mine: mineNow, theirs: box });
      }
      merged.push(mineNow);
      continue;
    }
    merged.push(box);
  }
  for (const [id, box] of myChanged) {
    if (theirRemoved.has(id)) {
      conflicts.push({ kind: "changed-removed", mine: box, theirs: null });
      merged.push(box);
    }
  }
  for (const box of myChanges.added) merged.push(box);
  return { merged, theirs, theirChanges, myChanges, conflicts };
}
