// The editor's boxes: the API's box plus a local id (the API's boxes have none; the id
// lives only in this browser, to follow a box through edits, undo and merges).
import type { Schemas } from "../../api/client";

export type BoxStatus = Schemas["BoxStatus"];
export interface BoxData {
  class_id: number;
  x: number;
  y: number;
  w: number;
  h: number;
  source: string;
  confidence: number | null;
  status: BoxStatus;
}
export interface EditorBox extends BoxData {
  readonly id: string;
}

// Ids unique across reloads: boxes kept in IndexedDB carry ids from earlier sessions.
const session = Math.random().toString(36).slice(2, 8);
let counter = 0;
export function newId(): string {
  counter += 1;
  return `${session}-${counter}`;
}

export function withIds(boxes: readonly BoxData[], makeId: () => string = newId): EditorBox[] {
  return boxes.map((box) => ({ ...toData(box), id: makeId() }));
}

export function toData(box: BoxData): BoxData {
  return {
    class_id: box.class_id,
    x: box.x,
    y: box.y,
    w: box.w,
    h: box.h,
    source: box.source,
    confidence: box.confidence ?? null,
    status: box.status,
  };
}

const EPSILON = 1e-9;
export function sameBox(a: BoxData, b: BoxData): boolean {
  return (
    a.class_id === b.class_id &&
    a.status === b.status &&
    a.source === b.source &&
    (a.confidence ?? null) === (b.confidence ?? null) &&
    Math.abs(a.x - b.x) < EPSILON &&
    Math.abs(a.y - b.y) < EPSILON &&
    Math.abs(a.w - b.w) < EPSILON &&
    Math.abs(a.h - b.h) < EPSILON
  );
}

/** The confidence under which an opened editor hides predictions (its slider's start). */
export const DEFAULT_THRESHOLD = 0.25;

/** What the editor shows of a prediction under the threshold: nothing. */
export function isShown(box: BoxData, threshold: number): boolean {
  return box.status !== "predicted" || (box.confidence ?? 1) >= threshold;
}
