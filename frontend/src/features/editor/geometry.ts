// The editor's geometry, as pure functions: the API's normalised boxes (x, y the
// top-left corner, w, h the size, all in [0, 1]) and the canvas's image pixels, the
// view (zoom and pan) and the moves a user makes. The canvas only draws what these
// return.

export interface Size {
  width: number;
  height: number;
}
export interface Point {
  x: number;
  y: number;
}
/** A box in image pixels. */
export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}
/** A box as the API stores it: normalised to the image's size. */
export interface NormBox {
  x: number;
  y: number;
  w: number;
  h: number;
}
/** Screen = image × scale + (x, y). */
export interface View {
  scale: number;
  x: number;
  y: number;
}

/** Boxes smaller than this (image pixels, either side) are a click, not a box. */
export const MIN_BOX_PX = 3;
export const NUDGE_PX = 1;
export const NUDGE_LARGE_PX = 10;
export const MIN_SCALE = 0.01;
export const MAX_SCALE = 32;

const clamp = (value: number, low: number, high: number) => Math.min(high, Math.max(low, value));

export function toPixels(box: NormBox, image: Size): Rect {
  return {
    x: box.x * image.width,
    y: box.y * image.height,
    width: box.w * image.width,
    height: box.h * image.height,
  };
}

/**
 * A pixel rectangle as the API wants it: cut to the image, normalised, with
 * x + w <= 1 and y + h <= 1 exactly (what the server checks). A rectangle with a
 * negative size (dragged up or left) is turned around first.
 */
export function toNormalised(rect: Rect, image: Size): NormBox {
  const r = clipRect(rect, image);
  const x = clamp(r.x / image.width, 0, 1);
  const y = clamp(r.y / image.height, 0, 1);
  return {
    x,
    y,
    w: Math.min(r.width / image.width, 1 - x),
    h: Math.min(r.height / image.height, 1 - y),
  };
}

/** Turns a rectangle with a negative width or height into the same area, positive. */
export function positive(rect: Rect): Rect {
  const x = rect.width < 0 ? rect.x + rect.width : rect.x;
  const y = rect.height < 0 ? rect.y + rect.height : rect.y;
  return { x, y, width: Math.abs(rect.width), height: Math.abs(rect.height) };
}

/** The part of a rectangle inside the image (a resize stops at the edges). */
export function clipRect(rect: Rect, image: Size): Rect {
  const r = positive(rect);
  const x = clamp(r.x, 0, image.width);
  const y = clamp(r.y, 0, image.height);
  const right = clamp(r.x + r.width, 0, image.width);
  const bottom = clamp(r.y + r.height, 0, image.height);
  return { x, y, width: right - x, height: bottom - y };
}

/** A rectangle moved back inside the image, keeping its size (a move stops at the edges). */
export function keepInside(rect: Rect, image: Size): Rect {
  const width = Math.min(Math.abs(rect.width), image.width);
  const height = Math.min(Math.abs(rect.height), image.height);
  const r = positive(rect);
  return {
    x: clamp(r.x, 0, image.width - width),
    y: clamp(r.y, 0, image.height - height),
    width,
    height,
  };
}

/** The box dragged out between two points, cut to the image. */
export function rectFromPoints(a: Point, b: Point, image: Size): Rect {
  return clipRect({ x: a.x, y: a.y, width: b.x - a.x, height: b.y - a.y }, image);
}

export function isBigEnough(rect: Rect, minPx = MIN_BOX_PX): boolean {
  return Math.abs(rect.width) >= minPx && Math.abs(rect.height) >= minPx;
}

/** A box moved by (dx, dy) image pixels, keeping its size, stopping at the edges. */
export function nudge(box: NormBox, dx: number, dy: number, image: Size): NormBox {
  return {
    x: clamp(box.x + dx / image.width, 0, 1 - box.w),
    y: clamp(box.y + dy / image.height, 0, 1 - box.h),
    w: box.w,
    h: box.h,
  };
}

/**
 * A box dragged to the pixel position `to` (its new top-left corner): the size stays
 * exactly what it was, the position stops at the edges.
 */
export function movedTo(box: NormBox, to: Point, image: Size): NormBox {
  return nudge(box, to.x - box.x * image.width, to.y - box.y * image.height, image);
}

/** The step of an arrow key press, in image pixels. */
export function nudgeStep(key: string, large: boolean): Point | null {
  const step = large ? NUDGE_LARGE_PX : NUDGE_PX;
  switch (key) {
    case "ArrowLeft":
      return { x: -step, y: 0 };
    case "ArrowRight":
      return { x: step, y: 0 };
    case "ArrowUp":
      return { x: 0, y: -step };
    case "ArrowDown":
      return { x: 0, y: step };
    default:
      return null;
  }
}

export function intersects(a: Rect, b: Rect): boolean {
  const p = positive(a);
  const q = positive(b);
  return p.x < q.x + q.width && q.x < p.x + p.width && p.y < q.y + q.height && q.y < p.y + p.height;
}

export function iou(a: NormBox, b: NormBox): number {
  const w = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
  const h = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  return inter / (a.w * a.h + b.w * b.h - inter);
}

/** A point on the screen (the stage) in image pixels. */
export function screenToImage(view: View, point: Point): Point {
  return { x: (point.x - view.x) / view.scale, y: (point.y - view.y) / view.scale };
}

export function clampScale(scale: number): number {
  return clamp(scale, MIN_SCALE, MAX_SCALE);
}

/** Zooms by `factor`, keeping the image point under `pointer` where it is. */
export function zoomAround(view: View, pointer: Point, factor: number): View {
  const scale = clampScale(view.scale * factor);
  const anchor = screenToImage(view, pointer);
  return { scale, x: pointer.x - anchor.x * scale, y: pointer.y - anchor.y * scale };
}

/** The whole image in the viewport, centred, with a margin. */
export function fitView(image: Size, viewport: Size, margin = 16): View {
  if (image.width <= 0 || image.height <= 0 || viewport.width <= 0 || viewport.height <= 0) {
    return { scale: 1, x: 0, y: 0 };
  }
  const scale = clampScale(
    Math.min(
      (viewport.width - 2 * margin) / image.width,
      (viewport.height - 2 * margin) / image.height,
    ),
  );
  return {
    scale,
    x: (viewport.width - image.width * scale) / 2,
    y: (viewport.height - image.height * scale) / 2,
  };
}

/** One image pixel per screen pixel, keeping the image point at the viewport's centre. */
export function actualSize(view: View, viewport: Size): View {
  return zoomAround(view, { x: viewport.width / 2, y: viewport.height / 2 }, 1 / view.scale);
}

/** The wheel's zoom factor: smooth for trackpads, one notch = 1.2× for mice. */
export function wheelFactor(deltaY: number, deltaMode = 0): number {
  const pixels = deltaMode === 1 ? deltaY * 16 : deltaMode === 2 ? deltaY * 400 : deltaY;
  return Math.exp((-pixels / 100) * Math.log(1.2));
}

/**
 * The box under an image point: of the boxes that contain it (grown by `slop` image
 * pixels, so a thin edge is easy to hit), the smallest, so a box inside another stays
 * reachable. `include` filters (hidden boxes are not hit).
 */
export function boxAt<B extends NormBox & { id: string }>(
  boxes: readonly B[],
  point: Point,
  image: Size,
  slop: number,
  include: (box: B) => boolean = () => true,
): string | null {
  let best: B | null = null;
  let bestArea = Number.POSITIVE_INFINITY;
  for (const box of boxes) {
    const r = toPixels(box, image);
    if (
      point.x < r.x - slop ||
      point.y < r.y - slop ||
      point.x > r.x + r.width + slop ||
      point.y > r.y + r.height + slop ||
      !include(box)
    ) {
      continue;
    }
    const area = r.width * r.height;
    if (area <= bestArea) {
      best = box;
      bestArea = area;
    }
  }
  return best ? best.id : null;
}
