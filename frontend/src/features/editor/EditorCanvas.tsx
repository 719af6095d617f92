// The canvas: the image in a layer of its own (drawn only on zoom and pan); the boxes,
// one light Konva shape each, in one layer, except the selected ones, which sit in a
// small layer above it, so that dragging or resizing them redraws those few and not
// the hundreds below; the Transformer, the box being drawn and the selection marquee in
// a third. Boxes are memoised and a drag stays inside Konva until it ends, so moving a
// box re-renders nothing in React; the store gets one commit per gesture.
import "konva/lib/shapes/Image.js";
import "konva/lib/shapes/Rect.js";
import "konva/lib/shapes/Transformer.js";
import type { Context } from "konva/lib/Context.js";
import Konva from "konva/lib/Core.js";
import type { KonvaEventObject, Node as KNode } from "konva/lib/Node.js";
import type { Shape as KShape } from "konva/lib/Shape.js";
import type { Layer as KLayer } from "konva/lib/Layer.js";
import type { Rect as KRect } from "konva/lib/shapes/Rect.js";
import type { Transformer as KTransformer } from "konva/lib/shapes/Transformer.js";
import type { Stage as KStage } from "konva/lib/Stage.js";
import type { Vector2d } from "konva/lib/types.js";
import { memo, useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import { Image as KImage, Layer, Rect, Shape, Stage, Transformer } from "react-konva/lib/ReactKonvaCore.js";
import { useStore } from "zustand";
import { type EditorBox, isShown } from "./boxes";
import { addBox, placeBoxes } from "./edits";
import {
  boxAt,
  clipRect,
  fitView,
  intersects,
  isBigEnough,
  keepInside,
  movedTo,
  type NormBox,
  type Point,
  rectFromPoints,
  screenToImage,
  type Size,
  toNormalised,
  toPixels,
  wheelFactor,
  zoomAround,
} from "./geometry";
import { showsLabel } from "./labels";
import type { EditorStore } from "./store";

// Hit graphs are not redrawn while dragging (Konva's default, stated): a drag redraws
// the boxes' scene only.
Konva.hitOnDragEnabled = false;

const FALLBACK = "#ff9800";

function rgba(hex: string, alpha: number): string {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  if (!m) return `rgba(255,152,0,${alpha})`;
  return `rgba(${parseInt(m[1] ?? "0", 16)},${parseInt(m[2] ?? "0", 16)},${parseInt(m[3] ?? "0", 16)},${alpha})`;
}

// Label widths at 12 px, measured once (text scales linearly with the font size).
const labelWidths = new Map<string, number>();

interface Look {
  stroke: string;
  fill: string;
  lineWidth: number;
  dashed: boolean;
  label: string | undefined;
  alpha: number;
}

// One box: its outline (dashed while a prediction), a light fill and, for predictions
// and the selection, a label of constant screen size (above the box, or inside it at
// the image's top edge). `scale` is the screen pixels per image pixel.
function paintBox(
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

const font = (scale: number) => `600 ${12 / scale}px system-ui, sans-serif`;

/** A selected box: one Konva shape that the user drags and resizes. */
function drawBox(context: Context, shape: KShape): void {
  const ctx = context._context;
  const scale = shape.getAbsoluteScale().x || 1;
  ctx.font = font(scale);
  paintBox(ctx, 0, 0, shape.width(), shape.height(), shape.getAttr("look") as Look, scale, shape.y(), true);
}

interface Painted extends Look {
  id: string;
  x: number;
  y: number;
  w: number;
  h: number;
}

/** Every other box, in one shape and one pass: nothing to hit-test, nothing to diff.
 * The hovered box (the shape's `hovered` attribute) is drawn last, with its label. */
function drawAll(context: Context, shape: KShape): void {
  const ctx = context._context;
  const scale = shape.getAbsoluteScale().x || 1;
  const hovered = shape.getAttr("hovered") as string | null | undefined;
  ctx.font = font(scale);
  let top: Painted | undefined;
  for (const item of shape.getAttr("items") as Painted[]) {
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

function hitBox(context: Context, shape: KShape): void {
  context.beginPath();
  context.rect(0, 0, shape.width(), shape.height());
  context.closePath();
  context.fillStrokeShape(shape);
}

/** Keeps a dragged box inside the image (Konva calls it with the node as `this`). */
function keepInImage(this: KNode, pos: Vector2d): Vector2d {
  const stage = this.getStage();
  const image = this.getAttr("imageSize") as Size | undefined;
  if (!stage || !image) return pos;
  const scale = stage.scaleX();
  const inside = keepInside(
    {
      x: (pos.x - stage.x()) / scale,
      y: (pos.y - stage.y()) / scale,
      width: this.width(),
      height: this.height(),
    },
    image,
  );
  return { x: inside.x * scale + stage.x(), y: inside.y * scale + stage.y() };
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

interface BoxProps {
  box: EditorBox;
  image: Size;
  look: Look;
  draggable: boolean;
}

const BoxShape = memo(function BoxShape({ box, image, look, draggable }: BoxProps) {
  const px = toPixels(box, image);
  return (
    <Shape
      id={box.id}
      name="box"
      x={px.x}
      y={px.y}
      width={px.width}
      height={px.height}
      fill={look.fill}
      hitStrokeWidth={10}
      strokeScaleEnabled={false}
      look={look}
      imageSize={image}
      sceneFunc={drawBox}
      hitFunc={hitBox}
      draggable={draggable}
      dragBoundFunc={keepInImage}
      perfectDrawEnabled={false}
      shadowForStrokeEnabled={false}
    />
  );
});

type Gesture =
  | { kind: "draw"; start: Point; moved: boolean; target: string | null; screen: Point }
  | { kind: "marquee"; start: Point; additive: boolean; target: string | null; screen: Point; moved: boolean }
  | { kind: "pan"; screen: Point; view: { x: number; y: number } };

interface Props {
  store: EditorStore;
  /** the full-resolution file, or a preview (the thumbnail) until it is decoded */
  image: CanvasImageSource;
  full: boolean;
  size: Size;
  colors: string[];
  classNames: string[];
  readOnly: boolean;
  onReady?: () => void;
}

const DRAG_THRESHOLD = 3; // screen pixels before a press becomes a drag
const HIT_SLOP_PX = 4; // a press this close to a box's edge hits it

export function EditorCanvas({ store, image, full, size, colors, classNames, readOnly, onReady }: Props) {
  const boxes = useStore(store, (s) => s.history.present);
  const selected = useStore(store, (s) => s.selected);
  const tool = useStore(store, (s) => s.tool);
  const threshold = useStore(store, (s) => s.threshold);
  const view = useStore(store, (s) => s.view);
  const viewport = useStore(store, (s) => s.viewport);
  const container = useRef<HTMLDivElement | null>(null);
  const stageRef = useRef<KStage | null>(null);
  const boxLayer = useRef<KLayer | null>(null);
  const allShape = useRef<KShape | null>(null);
  const activeLayer = useRef<KLayer | null>(null);
  const pendingDrag = useRef<string | null>(null);
  const uiLayer = useRef<KLayer | null>(null);
  const draft = useRef<KRect | null>(null);
  const marquee = useRef<KRect | null>(null);
  const transformer = useRef<KTransformer | null>(null);
  const gesture = useRef<Gesture | null>(null);
  const space = useRef(false);
  const [panning, setPanning] = useState(false);
  const fitted = useRef(false);

  // The viewport follows the element's size; the first size fits the image.
  useLayoutEffect(() => {
    const element = container.current;
    if (!element) return;
    const measure = () => {
      const next = { width: element.clientWidth, height: element.clientHeight };
      store.getState().setViewport(next);
      if (!fitted.current && next.width > 0 && next.height > 0) {
        fitted.current = true;
        store.getState().setView(fitView(size, next));
      }
    };
    measure();
    const observer = new ResizeObserver(measure);
    observer.observe(element);
    return () => observer.disconnect();
  }, [store, size]);

  // First paint: Konva draws in the first animation frame after the first render (its
  // callback was queued before this one), and that frame is then painted.
  const ready = viewport.width > 0;
  useEffect(() => {
    if (!ready) return;
    const frame = requestAnimationFrame(() => {
      container.current?.setAttribute("data-ready", "true");
      onReady?.();
    });
    return () => cancelAnimationFrame(frame);
  }, [ready, onReady]);

  // The full resolution replaces the preview: one more mark when it is on screen.
  useEffect(() => {
    if (!ready || !full) return;
    const frame = requestAnimationFrame(() => {
      container.current?.setAttribute("data-full", "true");
      performance.mark("oculab:editor-full-resolution");
    });
    return () => cancelAnimationFrame(frame);
  }, [ready, full]);

  // The Transformer holds the selected boxes (none for viewers). A press on a box that
  // was not selected (the select tool) drags it now that it is in the active layer.
  useLayoutEffect(() => {
    const tr = transformer.current;
    const layer = activeLayer.current;
    if (!layer) return;
    if (tr) {
      tr.nodes(layer.getChildren());
      tr.getLayer()?.batchDraw();
    }
    const id = pendingDrag.current;
    pendingDrag.current = null;
    const node = id ? layer.findOne(`#${id}`) : undefined;
    if (node && !node.isDragging()) node.startDrag();
  }, [selected, boxes, threshold, readOnly]);

  // Space held: the next drag pans.
  useEffect(() => {
    const typing = (target: EventTarget | null) =>
      // Space also presses a focused button or types in a field: those keep it.
      target instanceof HTMLElement &&
      target.closest("button, a, input, textarea, select, summary, [contenteditable], dialog");
    const down = (event: KeyboardEvent) => {
      if (event.code === "Space" && !typing(event.target)) {
        event.preventDefault();
        if (!space.current) {
          space.current = true;
          setPanning(true);
        }
      }
    };
    const up = (event: KeyboardEvent) => {
      if (event.code === "Space") {
        space.current = false;
        setPanning(false);
      }
    };
    window.addEventListener("keydown", down);
    window.addEventListener("keyup", up);
    return () => {
      window.removeEventListener("keydown", down);
      window.removeEventListener("keyup", up);
    };
  }, []);

  const pointerOf = useCallback((event: MouseEvent): Point | null => {
    const stage = stageRef.current;
    if (!stage) return null;
    stage.setPointersPositions(event);
    return stage.getPointerPosition();
  }, []);

  const onMove = useCallback(
    (event: MouseEvent) => {
      const g = gesture.current;
      const stage = stageRef.current;
      const pointer = pointerOf(event);
      if (!g || !stage || !pointer) return;
      if (g.kind === "pan") {
        stage.position({ x: g.view.x + pointer.x - g.screen.x, y: g.view.y + pointer.y - g.screen.y });
        stage.batchDraw();
        return;
      }
      if (!g.moved && Math.hypot(pointer.x - g.screen.x, pointer.y - g.screen.y) < DRAG_THRESHOLD) return;
      g.moved = true;
      const here = screenToImage(store.getState().view, pointer);
      const node = g.kind === "draw" ? draft.current : marquee.current;
      const rect = rectFromPoints(g.start, here, size);
      node?.setAttrs({ ...rect, visible: true });
      uiLayer.current?.batchDraw();
    },
    [pointerOf, size, store],
  );

  const onUp = useCallback(
    (event: MouseEvent) => {
      window.removeEventListener("mousemove", onMove);
      window.removeEventListener("mouseup", onUp);
      const g = gesture.current;
      gesture.current = null;
      const state = store.getState();
      if (!g) return;
      if (g.kind === "pan") {
        const stage = stageRef.current;
        if (stage) state.setView({ scale: state.view.scale, x: stage.x(), y: stage.y() });
        return;
      }
      draft.current?.visible(false);
      marquee.current?.visible(false);
      uiLayer.current?.batchDraw();
      const pointer = pointerOf(event);
      if (!g.moved || !pointer) {
        // A click: select what was under it, or nothing.
        if (g.kind === "marquee" && g.additive) return;
        state.select(g.target ? new Set([g.target]) : new Set());
        return;
      }
      const here = screenToImage(state.view, pointer);
      const rect = rectFromPoints(g.start, here, size);
      if (g.kind === "draw") {
        if (!isBigEnough(rect)) return;
        const next = addBox(state.history.present, toNormalised(rect, size), state.classId);
        const made = next.at(-1);
        state.commit(next, made ? new Set([made.id]) : new Set());
        return;
      }
      const hit = new Set(g.additive ? state.selected : []);
      for (const box of state.history.present) {
        if (isShown(box, state.threshold) && intersects(toPixels(box, size), rect)) hit.add(box.id);
      }
      state.select(hit);
    },
    [onMove, pointerOf, size, store],
  );

  const onMouseDown = useCallback(
    (e: KonvaEventObject<MouseEvent>) => {
      const stage = stageRef.current;
      const evt = e.evt;
      const pointer = stage && pointerOf(evt);
      if (!stage || !pointer || gesture.current) return;
      container.current?.focus({ preventScroll: true });
      const state = store.getState();
      if (evt.button === 1 || evt.button === 2 || space.current) {
        evt.preventDefault();
        gesture.current = { kind: "pan", screen: pointer, view: { x: stage.x(), y: stage.y() } };
      } else if (evt.button === 0) {
        const target = e.target;
        if (target.getParent()?.getClassName() === "Transformer") return; // an anchor
        // A selected box is a Konva shape; any other box is found by geometry.
        const id = target.hasName("box")
          ? target.id()
          : boxAt(
              state.history.present,
              screenToImage(state.view, pointer),
              size,
              HIT_SLOP_PX / state.view.scale,
              (box) => !state.selected.has(box.id) && isShown(box, state.threshold),
            );
        const additive = evt.shiftKey || evt.ctrlKey || evt.metaKey;
        if (id && additive) {
          const next = new Set(state.selected);
          if (next.has(id)) next.delete(id);
          else next.add(id);
          state.select(next);
          return;
        }
        if (id && !readOnly && state.selected.has(id)) return; // Konva drags it
        if (id && !readOnly && state.tool === "select") {
          pendingDrag.current = id; // dragged once it is in the active layer
          state.select(new Set([id]));
          return;
        }
        const start = screenToImage(state.view, pointer);
        gesture.current =
          !readOnly && state.tool === "box" && !additive
            ? { kind: "draw", start, moved: false, target: id, screen: pointer }
            : { kind: "marquee", start, additive, target: id, screen: pointer, moved: false };
      } else return;
      window.addEventListener("mousemove", onMove);
      window.addEventListener("mouseup", onUp);
    },
    [onMove, onUp, pointerOf, readOnly, size, store],
  );

  useEffect(
    () => () => {
      window.removeEventListener("mousemove", onMove);
      window.removeEventListener("mouseup", onUp);
    },
    [onMove, onUp],
  );

  // The box under the pointer shows its label even where labels are hidden; hovering
  // redraws the boxes' layer only when the hovered box changes.
  const setHovered = useCallback((id: string | null) => {
    const shape = allShape.current;
    if (!shape || (shape.getAttr("hovered") ?? null) === id) return;
    shape.setAttr("hovered", id);
    boxLayer.current?.batchDraw();
  }, []);

  const onHover = useCallback(
    (e: KonvaEventObject<MouseEvent>) => {
      const stage = stageRef.current;
      if (!stage || gesture.current || Konva.isDragging()) return;
      const pointer = pointerOf(e.evt);
      if (!pointer) return;
      const state = store.getState();
      const id = boxAt(
        state.history.present,
        screenToImage(state.view, pointer),
        size,
        HIT_SLOP_PX / state.view.scale,
        (box) => !state.selected.has(box.id) && isShown(box, state.threshold),
      );
      setHovered(id ?? null);
    },
    [pointerOf, setHovered, size, store],
  );

  const onLeave = useCallback(() => setHovered(null), [setHovered]);

  const onWheel = useCallback(
    (e: KonvaEventObject<WheelEvent>) => {
      e.evt.preventDefault();
      const pointer = stageRef.current?.getPointerPosition();
      if (!pointer) return;
      const state = store.getState();
      state.setView(zoomAround(state.view, pointer, wheelFactor(e.evt.deltaY, e.evt.deltaMode)));
    },
    [store],
  );

  // One commit when a drag ends: every box the drag moved (the Transformer moves the
  // whole selection together).
  const onDragEnd = useCallback(
    (e: KonvaEventObject<DragEvent>) => {
      const layer = activeLayer.current;
      if (!layer || !e.target.hasName("box")) return;
      const state = store.getState();
      const ids = state.selected.has(e.target.id()) ? state.selected : new Set([e.target.id()]);
      const byId = new Map(state.history.present.map((box) => [box.id, box]));
      const placed = new Map<string, NormBox>();
      for (const node of layer.getChildren((n) => ids.has(n.id()))) {
        const box = byId.get(node.id());
        if (box) placed.set(box.id, movedTo(box, { x: node.x(), y: node.y() }, size));
      }
      state.commit(placeBoxes(state.history.present, placed));
    },
    [size, store],
  );

  const onTransform = useCallback((e: KonvaEventObject<Event>) => {
    const node = e.target;
    node.setAttrs({
      width: Math.max(1, node.width() * node.scaleX()),
      height: Math.max(1, node.height() * node.scaleY()),
      scaleX: 1,
      scaleY: 1,
    });
  }, []);

  const onTransformEnd = useCallback(() => {
    const tr = transformer.current;
    if (!tr) return;
    const state = store.getState();
    const placed = new Map<string, NormBox>();
    for (const node of tr.nodes()) {
      const rect = clipRect({ x: node.x(), y: node.y(), width: node.width(), height: node.height() }, size);
      placed.set(node.id(), toNormalised(rect, size));
    }
    state.commit(placeBoxes(state.history.present, placed));
  }, [size, store]);

  // Resizing stops at the image's edges and at a minimum size.
  const boundBox = useCallback(
    (old: { x: number; y: number; width: number; height: number; rotation: number }, next: typeof old) => {
      const { view: v } = store.getState();
      const left = (next.x - v.x) / v.scale;
      const top = (next.y - v.y) / v.scale;
      const right = left + next.width / v.scale;
      const bottom = top + next.height / v.scale;
      const slack = 0.5;
      if (left < -slack || top < -slack || right > size.width + slack || bottom > size.height + slack) return old;
      if (Math.abs(next.width) < 2 || Math.abs(next.height) < 2) return old;
      return next;
    },
    [size, store],
  );

  const draggable = !readOnly;
  const labelOf = (box: EditorBox, isSelected: boolean) => {
    const name = classNames[box.class_id] ?? `class ${box.class_id}`;
    if (box.status === "predicted") return `${name} ${(box.confidence ?? 0).toFixed(2)}`;
    return isSelected ? name : undefined;
  };
  // The boxes that are not selected, as plain data for one shape (recomputed per commit,
  // never while dragging).
  const items = useMemo(() => {
    const painted: Painted[] = [];
    for (const box of boxes) {
      if (selected.has(box.id) || !isShown(box, threshold)) continue;
      const px = toPixels(box, size);
      painted.push({
        ...cachedLook(box, colors[box.class_id] ?? FALLBACK, false, labelOf(box, false)),
        id: box.id,
        x: px.x,
        y: px.y,
        w: px.width,
        h: px.height,
      });
    }
    return painted;
  }, [boxes, selected, threshold, colors, classNames, size]);
  const active = boxes.filter((box) => selected.has(box.id));
  const cursor = panning ? "grab" : tool === "box" && !readOnly ? "crosshair" : "default";

  return (
    <div
      ref={container}
      className="editor-canvas"
      role="application"
      aria-label="Image canvas"
      aria-roledescription="annotation canvas"
      tabIndex={0}
      style={{ cursor }}
      onContextMenu={(event) => event.preventDefault()}
    >
      {viewport.width > 0 && (
        <Stage
          ref={stageRef}
          width={viewport.width}
          height={viewport.height}
          scaleX={view.scale}
          scaleY={view.scale}
          x={view.x}
          y={view.y}
          dragDistance={DRAG_THRESHOLD}
          onMouseDown={onMouseDown}
          onMouseMove={onHover}
          onMouseLeave={onLeave}
          onWheel={onWheel}
          onDragEnd={onDragEnd}
        >
          <Layer listening={false}>
            <KImage image={image} width={size.width} height={size.height} perfectDrawEnabled={false} />
          </Layer>
          <Layer ref={boxLayer} listening={false}>
            <Shape ref={allShape} items={items} sceneFunc={drawAll} listening={false} perfectDrawEnabled={false} />
          </Layer>
          <Layer ref={activeLayer}>
            {active.map((box) => (
              <BoxShape
                key={box.id}
                box={box}
                image={size}
                look={cachedLook(box, colors[box.class_id] ?? FALLBACK, true, labelOf(box, true))}
                draggable={draggable}
              />
            ))}
          </Layer>
          <Layer ref={uiLayer}>
            <Rect ref={draft} visible={false} listening={false} stroke="#ffffff" strokeWidth={1.5} dash={[4, 3]} strokeScaleEnabled={false} fill="rgba(255,255,255,0.12)" />
            <Rect ref={marquee} visible={false} listening={false} stroke="#5b8cff" strokeWidth={1} dash={[4, 3]} strokeScaleEnabled={false} fill="rgba(91,140,255,0.12)" />
            {!readOnly && (
              <Transformer
                ref={transformer}
                rotateEnabled={false}
                flipEnabled={false}
                ignoreStroke
                keepRatio={false}
                anchorSize={8}
                borderStroke="#ffffff"
                anchorStroke="#1f4fd1"
                boundBoxFunc={boundBox}
                onTransform={onTransform}
                onTransformEnd={onTransformEnd}
              />
            )}
          </Layer>
        </Stage>
      )}
    </div>
  );
}
