// The editor's first frame, before the Konva stage's code has loaded: the image and
// the boxes, painted once per change with the same code as the stage's shapes, in one
// plain canvas that takes no input. The stage replaces it as soon as it has drawn.
import { useLayoutEffect, useRef } from "react";
import { useStore } from "zustand";
import { toPixels, type Size } from "./geometry";
import { boxLook, paintAll, paintBox, paintedBoxes } from "./paint";
import type { EditorStore } from "./store";

interface Props {
  store: EditorStore;
  image: CanvasImageSource;
  size: Size;
  colors: string[];
  classNames: string[];
  viewport: Size;
}

export function FirstFrame({ store, image, size, colors, classNames, viewport }: Props) {
  const boxes = useStore(store, (s) => s.history.present);
  const selected = useStore(store, (s) => s.selected);
  const threshold = useStore(store, (s) => s.threshold);
  const view = useStore(store, (s) => s.view);
  const canvas = useRef<HTMLCanvasElement | null>(null);

  useLayoutEffect(() => {
    const element = canvas.current;
    const ctx = element?.getContext("2d");
    if (!element || !ctx) return;
    // As Konva's canvases: a bitmap of the device's pixels.
    const ratio = window.devicePixelRatio || 1;
    const width = Math.floor(viewport.width * ratio);
    const height = Math.floor(viewport.height * ratio);
    if (element.width !== width || element.height !== height) {
      element.width = width;
      element.height = height;
    } else {
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, width, height);
    }
    ctx.setTransform(ratio * view.scale, 0, 0, ratio * view.scale, ratio * view.x, ratio * view.y);
    ctx.drawImage(image, 0, 0, size.width, size.height);
    paintAll(ctx, paintedBoxes(boxes, selected, threshold, colors, classNames, size), view.scale);
    for (const box of boxes) {
      if (!selected.has(box.id)) continue;
      const px = toPixels(box, size);
      paintBox(ctx, px.x, px.y, px.width, px.height, boxLook(box, true, colors, classNames), view.scale, px.y, true);
    }
  }, [boxes, selected, threshold, view, viewport, image, size, colors, classNames]);

  return (
    <canvas
      ref={canvas}
      className="first-frame"
      style={{ width: viewport.width, height: viewport.height }}
      aria-hidden="true"
    />
  );
}
