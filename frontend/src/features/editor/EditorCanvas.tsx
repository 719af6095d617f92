// The canvas area: the element that takes the pointer and the keys, its size (the
// view fits the image to it), and what is drawn in it. The first frame is painted
// with a plain 2D canvas (FirstFrame) as soon as the image and the boxes are in; the
// Konva stage, whose code (Konva, react-konva) is most of the editor's, loads once
// that frame is on screen and takes over as soon as it has drawn the same picture.
// Afterwards (the next image) the stage draws the first frame itself.
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from "react";
import { useStore } from "zustand";
import { FirstFrame } from "./FirstFrame";
import { fitView, type Size } from "./geometry";
import { type Kit, KonvaCanvas } from "./KonvaCanvas";
import type { EditorStore } from "./store";

let loadedKit: Kit | null = null;
let kitLoading: Promise<Kit> | null = null;

function loadKonva(): Promise<Kit> {
  kitLoading ??= import("./konvaKit").then(
    (loaded) => (loadedKit = loaded),
    (error: unknown) => {
      kitLoading = null; // a later editor tries again
      throw error;
    },
  );
  return kitLoading;
}

interface Props {
  store: EditorStore;
  /** the full-resolution file, or a preview (the thumbnail) until it is decoded */
  image: CanvasImageSource;
  full: boolean;
  size: Size;
  colors: string[];
  classNames: string[];
  readOnly: boolean;
  /** the image and every box are on screen (the first frame) */
  onReady?: () => void;
}

export function EditorCanvas({ store, image, full, size, colors, classNames, readOnly, onReady }: Props) {
  const tool = useStore(store, (s) => s.tool);
  const viewport = useStore(store, (s) => s.viewport);
  const container = useRef<HTMLDivElement | null>(null);
  const space = useRef(false);
  const [panning, setPanning] = useState(false);
  const fitted = useRef(false);
  const [konva, setKonva] = useState<Kit | null>(loadedKit);
  const [failed, setFailed] = useState(false);
  // The first frame is on screen / the stage has drawn (the editor takes the mouse).
  const [painted, setPainted] = useState(false);
  const [interactive, setInteractive] = useState(false);

  // The viewport follows the element's size; the first size fits the image.
  useLayoutEffect(() => {
    const element = container.current;
    if (!element) return;
    const measure = () => {
      const next = { width: element.clientWidth, height: element.clientHeight };
      const fit = !fitted.current && next.width > 0 && next.height > 0;
      if (fit) fitted.current = true;
      // One update: inside a layout effect each store update renders (and the first
      // frame paints) at once, so the size and the fit must not come one by one.
      store.getState().setViewport(next, fit ? fitView(size, next) : undefined);
    };
    measure();
    const observer = new ResizeObserver(measure);
    observer.observe(element);
    return () => observer.disconnect();
  }, [store, size]);

  const paintedOnce = useRef(false);
  const firstPaint = useCallback(() => {
    if (paintedOnce.current) return;
    paintedOnce.current = true;
    setPainted(true);
    onReady?.();
  }, [onReady]);

  // Without the stage's code: FirstFrame drew in its layout effect, the frame after it
  // is painted; then the stage's code loads.
  const ready = viewport.width > 0;
  const staticFirst = useRef(konva === null);
  useEffect(() => {
    if (!ready || !staticFirst.current) return;
    let live = true;
    const frame = requestAnimationFrame(() => {
      firstPaint();
      loadKonva().then(
        (loaded) => live && setKonva(loaded),
        () => live && setFailed(true),
      );
    });
    return () => {
      live = false;
      cancelAnimationFrame(frame);
    };
  }, [ready, firstPaint]);

  const drawnOnce = useRef(false);
  const onDrawn = useCallback(() => {
    if (drawnOnce.current) return;
    drawnOnce.current = true;
    container.current?.setAttribute("data-ready", "true");
    performance.mark("oculab:editor-interactive");
    setInteractive(true);
    firstPaint();
  }, [firstPaint]);

  // The full resolution replaces the preview: one more mark when it is on screen.
  useEffect(() => {
    if (!painted || !full) return;
    const frame = requestAnimationFrame(() => {
      container.current?.setAttribute("data-full", "true");
      performance.mark("oculab:editor-full-resolution");
    });
    return () => cancelAnimationFrame(frame);
  }, [painted, full]);

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

  const cursor = panning ? "grab" : tool === "box" && !readOnly ? "crosshair" : "default";
  return (
    <div
      ref={container}
      className="editor-canvas"
      role="application"
      aria-label="Image canvas"
      aria-roledescription="annotation canvas"
      // eslint-disable-next-line jsx-a11y/no-noninteractive-tabindex -- the canvas takes the editor's keyboard shortcuts
      tabIndex={0}
      style={{ cursor }}
      onContextMenu={(event) => event.preventDefault()}
    >
      {ready && konva && (
        <KonvaCanvas
          kit={konva}
          store={store}
          image={image}
          size={size}
          colors={colors}
          classNames={classNames}
          readOnly={readOnly}
          container={container}
          space={space}
          onDrawn={onDrawn}
        />
      )}
      {ready && !interactive && (
        <FirstFrame store={store} image={image} size={size} colors={colors} classNames={classNames} viewport={viewport} />
      )}
      {failed && (
        <p className="notice canvas-notice" role="alert">
          The editor could not load. Reload the page to try again; your changes are kept.
        </p>
      )}
    </div>
  );
}
