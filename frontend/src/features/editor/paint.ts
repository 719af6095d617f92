// How a box looks on the canvas, in plain 2D-context calls: Konva's shapes (the editor)
// and the first frame (drawn before Konva has loaded) paint with the same code, so the
// hand-over between them shows no change.
import { type EditorBox, isShown } from "./boxes";
import { type Size, toPixels, type View } from "./geometry";
import { showsLabel } from "./labels";

export const FALLBACK = "#ff9800";

function rgba(hex: string, alpha: number): string {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  if (!m) return `rgba(255,152,0,${alpha})`;
  return `rgba(${parseInt(m[1] ?? "0", 16)},${parseInt(m[2] ?? "0", 16)},${parseInt(m[3] ?? "0", 16)},${alpha})`;
}

// Label widths at 12 px, measured once (text scales linearly with the font size).
const labelWidths = new Map<string, number>();

export interface Look {
  stroke: string;
  fill: string;
  lineWidth: number;
  dashed: boolean;
  label: string | undefined;
  alpha: number;
}

/** A box as plain data for a one-pass painter, in image pixels. */
export interface Painted extends Look {
  id: string;
  x: number;
  y: number;
  w: number;
  h: number;
}

// One box: its outline (dashed while a prediction), a light fill and, for predictions
// and the selection, a label of constant screen size (above the box, or inside it at
// the image's top edge). `scale` is the screen pixels per image pixel.
export function paintBox(
  ctx: CanvasRenderingContext2D,
  x: number,
  y: number,
  w: number,
  h: number,
  look: Look,
  scale: number,
  top: number,
  emphasised: boolean,
) {
  ctx.globalAlpha = look.alpha;
  ctx.beginPath();
  ctx.rect(x, y, w, h);
  ctx.fillStyle = look.fill;
  ctx.fill();
  ctx.lineWidth = look.lineWidth / scale;
  ctx.strokeStyle = look.stroke;
  if (look.dashed) ctx.setLineDash([6 / scale, 4 / scale]);
  ctx.stroke();
  if (look.dashed) ctx.setLineDash([]);
  if (look.label && showsLabel(w, scale, emphasised)) {
    const size = 12 / scale;
    let width12 = labelWidths.get(look.label);
    if (width12 === undefined) {
      width12 = (ctx.measureText(look.label).width * 12) / size;
      if (labelWidths.size > 5000) labelWidths.clear();
      labelWidths.set(look.label, width12);
    }
    const textWidth = (width12 * size) / 12;
    const above = top >= size * 1.4 ? -size * 1.4 : 0;
    ctx.fillStyle = look.stroke;
    ctx.fillRect(x, y + above, textWidth + 6 / scale, size * 1.4);
    ctx.fillStyle = "#ffffff";
    ctx.fillText(look.label, x + 3 / scale, y + above + size * 1.05);
  }
  ctx.globalAlpha = 1;
}

export const font = (scale: number) => `600 ${12 / scale}px system-ui, sans-serif`;

/** The boxes in one pass; the hovered one last, with its label. */
export function paintAll(ctx: CanvasRenderingContext2D, items: readonly Painted[], scale: number, hovered?: string | null) {
  ctx.font = font(scale);
  let top: Painted | undefined;
  for (const item of items) {
    if (item.id === hovered) top = item;
    else paintBox(ctx, item.x, item.y, item.w, item.h, item, scale, item.y, false);
  }
  if (top) paintBox(ctx, top.x, top.y, top.w, top.h, top, scale, top.y, true);
}

function lookOf(box: EditorBox, color: string, selected: boolean, label: string | undefined): Look {
  const rejected = box.status === "rejected";
  const stroke = rejected ? "#8a8f98" : color;
  return {
    stroke,
    fill: rgba(stroke, selected ? 0.28 : 0.1),
    lineWidth: selected ? 3 : 2,
    dashed: box.status === "predicted",
    label,
    alpha: rejected ? 0.45 : 1,
  };
}

// Looks are shared objects (one per colour, state and label), so memoised boxes see
// the same look again and do not re-render.
const looks = new Map<string, Look>();
function cachedLook(box: EditorBox, color: string, selected: boolean, label: string | undefined): Look {
  const key = `${color}|${box.status}|${selected ? 1 : 0}|${label ?? ""}`;
  let look = looks.get(key);
  if (!look) {
    if (looks.size > 10_000) looks.clear();
    look = lookOf(box, color, selected, label);
    looks.set(key, look);
  }
  return look;
}

/** A box's look: its class's colour, its state and, where it has one, its label. */
export function boxLook(box: EditorBox, isSelected: boolean, colors: readonly string[], classNames: readonly string[]): Look {
  const name = classNames[box.class_id] ?? `class ${box.class_id}`;
  const label =
    box.status === "predicted" ? `${name} ${(box.confidence ?? 0).toFixed(2)}` : isSelected ? name : undefined;
  return cachedLook(box, colors[box.class_id] ?? FALLBACK, isSelected, label);
}

/** The shown boxes that are not selected, as plain data for one pass of `paintAll`. */
export function paintedBoxes(
  boxes: readonly EditorBox[],
  selected: ReadonlySet<string>,
  threshold: number,
  colors: readonly string[],
  classNames: readonly string[],
  size: Size,
): Painted[] {
  const painted: Painted[] = [];
  for (const box of boxes) {
    if (selected.has(box.id) || !isShown(box, threshold)) continue;
    const px = toPixels(box, size);
    painted.push({ ...boxLook(box, false, colors, classNames), id: box.id, x: px.x, y: px.y, w: px.width, h: px.height });
  }
  return painted;
}

/** What a plain-canvas frame of the editor shows. */
export interface Frame {
  image: CanvasImageSource;
  /** The image's drawn size, in its own pixels. */
  size: Size;
  /** The canvas's size, in CSS pixels. */
  viewport: Size;
  view: View;
  boxes: readonly EditorBox[];
  selected: ReadonlySet<string>;
  threshold: number;
  colors: readonly string[];
  classNames: readonly string[];
}

/**
 * The editor's picture on a plain canvas, as the Konva stage draws it: a bitmap of the
 * device's pixels, the image at the view, the shown boxes in one pass and the selected
 * ones above them. The editor's first frame (FirstFrame.tsx) and the early frame the
 * route paints before React (earlyFrame.ts) both paint with this, so the hand-over
 * between them shows no change.
 */
export function paintFrame(canvas: HTMLCanvasElement, ctx: CanvasRenderingContext2D, frame: Frame): void {
  const { image, size, viewport, view, boxes, selected, colors, classNames } = frame;
  const ratio = window.devicePixelRatio || 1;
  const width = Math.floor(viewport.width * ratio);
  const height = Math.floor(viewport.height * ratio);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  } else {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, width, height);
  }
  ctx.setTransform(ratio * view.scale, 0, 0, ratio * view.scale, ratio * view.x, ratio * view.y);
  ctx.drawImage(image, 0, 0, size.width, size.height);
  paintAll(ctx, paintedBoxes(boxes, selected, frame.threshold, colors, classNames, size), view.scale);
  for (const box of boxes) {
    if (!selected.has(box.id)) continue;
    const px = toPixels(box, size);
    paintBox(ctx, px.x, px.y, px.width, px.height, boxLook(box, true, colors, classNames), view.scale, px.y, true);
  }
}
