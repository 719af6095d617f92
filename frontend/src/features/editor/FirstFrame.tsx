// The editor's first frame, before the Konva stage's code has loaded: the image and
// the boxes, painted once per change with the same code as the stage's shapes, in one
// plain canvas that takes no input. The stage replaces it as soon as it has drawn.
import { useLayoutEffect, useRef } from "react";
import { useStore } from "zustand";
import type { Size } from "./geometry";
import { paintFrame } from "./paint";
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
    paintFrame(element, ctx, { image, size, viewport, view, boxes, selected, threshold, colors, classNames });
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
