// The edits a user makes, as pure functions from one box list to the next. Each returns
// the same array when nothing changes (no undo step for a no-op) and keeps every box it
// does not touch, so the canvas redraws only what moved.
import { type BoxData, type EditorBox, isShown, newId, toData } from "./boxes";
import { type NormBox, nudge, type Size } from "./geometry";

type Ids = ReadonlySet<string>;

function mapSome(
  boxes: EditorBox[],
  ids: Ids,
  change: (box: EditorBox) => EditorBox,
): EditorBox[] {
  let changed = false;
  const next = boxes.map((box) => {
    if (!ids.has(box.id)) return box;
    const after = change(box);
    if (after !== box) changed = true;
    return after;
  });
  return changed ? next : boxes;
}

export function addBox(boxes: EditorBox[], geometry: NormBox, classId: number): EditorBox[] {
  const box: EditorBox = {
    id: newId(),
    class_id: classId,
    ...geometry,
    source: "manual",
    confidence: null,
    status: "accepted",
  };
  return [...boxes, box];
}

export function removeBoxes(boxes: EditorBox[], ids: Ids): EditorBox[] {
  if (ids.size === 0) return boxes;
  const next = boxes.filter((box) => !ids.has(box.id));
  return next.length === boxes.length ? boxes : next;
}

export function setClass(boxes: EditorBox[], ids: Ids, classId: number): EditorBox[] {
  return mapSome(boxes, ids, (box) => (box.class_id === classId ? box : { ...box, class_id: classId }));
}

/** New geometry for some boxes (a move or a resize on the canvas). */
export function placeBoxes(boxes: EditorBox[], placed: ReadonlyMap<string, NormBox>): EditorBox[] {
  return mapSome(boxes, new Set(placed.keys()), (box) => {
    const g = placed.get(box.id);
    if (!g || (g.x === box.x && g.y === box.y && g.w === box.w && g.h === box.h)) return box;
    return { ...box, x: g.x, y: g.y, w: g.w, h: g.h };
  });
}

export function nudgeBoxes(boxes: EditorBox[], ids: Ids, dx: number, dy: number, image: Size): EditorBox[] {
  return mapSome(boxes, ids, (box) => {
    const g = nudge(box, dx, dy, image);
    return g.x === box.x && g.y === box.y ? box : { ...box, x: g.x, y: g.y };
  });
}

/**
 * A person's verdict on predictions (or on a verdict given before); a box drawn by a
 * person is deleted, not rejected.
 */
export function review(boxes: EditorBox[], ids: Ids, verdict: "accepted" | "rejected"): EditorBox[] {
  return mapSome(boxes, ids, (box) => {
    if (box.status === verdict) return box;
    if (verdict === "rejected" && box.source === "manual" && box.status !== "predicted") return box;
    return { ...box, status: verdict };
  });
}

/**
 * "Accept all": every prediction at or above the threshold is accepted and every one
 * below it (hidden) is rejected, so the image leaves the review queue.
 */
export function acceptAll(boxes: EditorBox[], threshold: number): EditorBox[] {
  let changed = false;
  const next = boxes.map((box) => {
    if (box.status !== "predicted") return box;
    changed = true;
    return { ...box, status: isShown(box, threshold) ? ("accepted" as const) : ("rejected" as const) };
  });
  return changed ? next : boxes;
}

export function rejectAll(boxes: EditorBox[]): EditorBox[] {
  let changed = false;
  const next = boxes.map((box) => {
    if (box.status !== "predicted") return box;
    changed = true;
    return { ...box, status: "rejected" as const };
  });
  return changed ? next : boxes;
}

export function copyBoxes(boxes: EditorBox[], ids: Ids): BoxData[] {
  return boxes.filter((box) => ids.has(box.id)).map(toData);
}

/**
 * Pasted boxes are new manual boxes; pasted onto the image they came from, they are
 * moved by `offset` pixels so they do not hide the originals.
 */
export function pasteBoxes(
  boxes: EditorBox[],
  clipboard: readonly BoxData[],
  image: Size,
  offset: number,
): { boxes: EditorBox[]; pasted: Set<string> } {
  if (clipboard.length === 0) return { boxes, pasted: new Set() };
  const made = clipboard.map((data): EditorBox => {
    const g = offset ? nudge(data, offset, offset, image) : data;
    return {
      ...toData(data),
      x: g.x,
      y: g.y,
      id: newId(),
      source: "manual",
      status: "accepted",
      confidence: null,
    };
  });
  return { boxes: [...boxes, ...made], pasted: new Set(made.map((box) => box.id)) };
}
