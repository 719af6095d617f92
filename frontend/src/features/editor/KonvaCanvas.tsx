// The editor's Konva stage (with the library that `konvaKit` loads once the first
// frame is on screen): the image in a layer of its own (drawn only on zoom and pan); every box that is not
// selected, painted by one shape in one pass, in a second layer that takes no input;
// the selected boxes (Konva shapes), the Transformer, the box being drawn and the
// selection marquee in a third, so that dragging or resizing redraws those few and not
// the hundreds below. Only that layer listens, so only it has a hit canvas: three
// stage-sized bitmaps and one hit bitmap to allocate when the editor opens. A drag
// stays inside Konva until it ends, so moving a box re-renders nothing in React; the
// store gets one commit per gesture.
import type { Context } from "konva/lib/Context.js";
import type { KonvaEventObject, Node as KNode } from "konva/lib/Node.js";
import type { Shape as KShape } from "konva/lib/Shape.js";
import type { Layer as KLayer } from "konva/lib/Layer.js";
import type { Rect as KRect } from "konva/lib/shapes/Rect.js";
import type { Transformer as KTransformer } from "konva/lib/shapes/Transformer.js";
import type { Stage as KStage } from "konva/lib/Stage.js";
import type { Vector2d } from "konva/lib/types.js";
import { memo, type RefObject, useCallback, useEffect, useLayoutEffect, useMemo, useRef } from "react";
import { useStore } from "zustand";
import { type EditorBox, isShown } from "./boxes";
import { addBox, placeBoxes } from "./edits";
import {
  boxAt,
  clipRect,
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
import { boxLook, font, type Look, type Painted, paintAll, paintBox, paintedBoxes } from "./paint";
import type * as KonvaKit from "./konvaKit";
import type { EditorStore } from "./store";

export type Kit = typeof KonvaKit;

/** A selected box: one Konva shape that the user drags and resizes. */
function drawBox(context: Context, shape: KShape): void {
  const ctx = context._context;
  const scale = shape.getAbsoluteScale().x || 1;
  ctx.font = font(scale);
  paintBox(ctx, 0, 0, shape.width(), shape.height(), shape.getAttr("look") as Look, scale, shape.y(), true);
}

/** Every other box, in one shape and one pass: nothing to hit-test, nothing to diff.
 * The hovered box (the shape's `hovered` attribute) is drawn last, with its label. */
function drawAll(context: Context, shape: KShape): void {
  const scale = shape.getAbsoluteScale().x || 1;
  paintAll(context._context, shape.getAttr("items") as Painted[], scale, shape.getAttr("hovered") as string | null | undefined);
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

interface BoxProps {
  box: EditorBox;
  image: Size;
  look: Look;
  draggable: boolean;
  Shape: Kit["Shape"];
}

const BoxShape = memo(function BoxShape({ box, image, look, draggable, Shape }: BoxProps) {
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
  /** the canvas library, loaded */
  kit: Kit;
  store: EditorStore;
  /** the full-resolution file, or a preview (the thumbnail) until it is decoded */
  image: CanvasImageSource;
  size: Size;
  colors: string[];
  classNames: string[];
  readOnly: boolean;
  /** the element the stage is in (focused on a press) */
  container: RefObject<HTMLDivElement | null>;
  /** whether Space is held (the next drag pans) */
  space: RefObject<boolean>;
  /** the stage's first frame is on screen */
  onDrawn: () => void;
}

const DRAG_THRESHOLD = 3; // screen pixels before a press becomes a drag
const HIT_SLOP_PX = 4; // a press this close to a box's edge hits it

export function KonvaCanvas({ kit, store, image, size, colors, classNames, readOnly, container, space, onDrawn }: Props) {
  const { Konva, Image: KImage, Layer, Rect, Shape, Stage, Transformer } = kit;
  const boxes = useStore(store, (s) => s.history.present);
  const selected = useStore(store, (s) => s.selected);
  const threshold = useStore(store, (s) => s.threshold);
  const view = useStore(store, (s) => s.view);
  const viewport = useStore(store, (s) => s.viewport);
  const stageRef = useRef<KStage | null>(null);
  const boxLayer = useRef<KLayer | null>(null);
  const allShape = useRef<KShape | null>(null);
  const activeLayer = useRef<KLayer | null>(null);
  const pendingDrag = useRef<string | null>(null);
  const draft = useRef<KRect | null>(null);
  const marquee = useRef<KRect | null>(null);
  const transformer = useRef<KTransformer | null>(null);
  const gesture = useRef<Gesture | null>(null);

  // Konva draws in the first animation frame after the mount (its callback was queued
  // before this one), and that frame is then painted.
  useEffect(() => {
    const frame = requestAnimationFrame(onDrawn);
    return () => cancelAnimationFrame(frame);
  }, [onDrawn]);

  // The Transformer holds the selected boxes (none for viewers). A press on a box that
  // was not selected (the select tool) drags it now that it is in the active layer.
  useLayoutEffect(() => {
    const tr = transformer.current;
    const layer = activeLayer.current;
    if (!layer) return;
    if (tr) {
      tr.nodes(layer.getChildren((node) => node.hasName("box")));
      tr.getLayer()?.batchDraw();
    }
    const id = pendingDrag.current;
    pendingDrag.current = null;
    const node = id ? layer.findOne(`#${id}`) : undefined;
    if (node && !node.isDragging()) node.startDrag();
  }, [selected, boxes, threshold, readOnly]);

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
      activeLayer.current?.batchDraw();
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
      activeLayer.current?.batchDraw();
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
    [container, onMove, onUp, pointerOf, readOnly, size, space, store],
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
    [Konva, pointerOf, setHovered, size, store],
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
  // The boxes that are not selected, as plain data for one shape (recomputed per commit,
  // never while dragging).
  const items = useMemo(
    () => paintedBoxes(boxes, selected, threshold, colors, classNames, size),
    [boxes, selected, threshold, colors, classNames, size],
  );
  const active = boxes.filter((box) => selected.has(box.id));

  return (
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
                look={boxLook(box, true, colors, classNames)}
                draggable={draggable}
                Shape={Shape}
              />
            ))}
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
  );

}
