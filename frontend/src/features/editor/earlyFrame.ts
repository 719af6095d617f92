// The editor's first frame, painted before React has rendered the editor. On an opening
// by address (a new tab, a reload) the route's loader holds the editor's start and the
// thumbnail about a hundred milliseconds before React has rendered, laid out and
// painted the page: that first frame is painted then, into a bare copy of the editor's
// frame (the same elements and CSS classes as the app's header and the editor, no
// content and no controls), with the same drawing code as the editor's own first frame
// (paintFrame, paint.ts). React's first commit empties #root and puts the editor in its
// place, which paints the same picture in the same place.
import type { Schemas } from "../../api/client";
import { type FullImage, sizeOf } from "../../api/prefetch";
import { DEFAULT_THRESHOLD, withIds } from "./boxes";
import { fitView, type Size } from "./geometry";
import { paintFrame } from "./paint";

type EditorStart = Schemas["EditorStart"];
type ImageInfo = Schemas["ImageRead"];

// The bar's buttons and save state need about 700 px on one line (its breadcrumbs shrink).
const MIN_WIDTH = 800;

/**
 * The image's size as drawn: the file's own, or (from the preview) the stored size,
 * turned when the preview is turned (EXIF orientation applies to both as displayed).
 */
export function drawnSize(image: ImageInfo, file: FullImage | null, preview: HTMLImageElement | null): Size {
  if (file && sizeOf(file).width > 0) return sizeOf(file);
  const turned =
    preview && preview.naturalWidth > 0 && (preview.naturalWidth > preview.naturalHeight) !== (image.width > image.height);
  return turned && image.width !== image.height
    ? { width: image.height, height: image.width }
    : { width: image.width, height: image.height };
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const made = document.createElement(tag);
  made.className = className;
  made.append(...children);
  return made;
}

/**
 * The app's header and the editor's frame without their content: one button in each
 * bar, as the real ones have, so that each is as tall as the real one and the canvas's
 * area is where the editor's will be.
 */
function frame(): { shell: HTMLElement; area: HTMLElement } {
  const area = element("div", "editor-canvas");
  const shell = element(
    "div",
    "early-frame",
    element(
      "header",
      "topbar",
      element("span", "brand", element("span", "brand-mark"), "Oculab"),
      element("div", "user", element("button", "", "Sign out")),
    ),
    element(
      "main",
      "",
      element(
        "section",
        "editor",
        element("header", "editor-bar", element("div", "editor-nav", element("button", "", "?"))),
        element("div", "editor-body", area, element("aside", "editor-panel")),
      ),
    ),
  );
  // A picture, not a page: nothing in it can be focused, clicked or read out.
  shell.inert = true;
  shell.setAttribute("aria-hidden", "true");
  return { shell, area };
}

/**
 * Paints the first frame of the editor opening `start` with `preview` if the page has
 * not been rendered yet (an opening by address; else the editor paints its own). The
 * `oculab:editor-ready` mark goes in the animation frame that shows it. Returns
 * whether it painted.
 */
export function paintEarlyFrame(start: EditorStart, preview: HTMLImageElement): boolean {
  const root = document.getElementById("root");
  if (!root || root.childElementCount > 0 || preview.naturalWidth === 0) return false;
  // Narrower, the editor's bar may wrap onto two lines, depending on its content: the
  // copy's would not, and the picture would jump when the editor takes its place.
  if (window.innerWidth < MIN_WIDTH) return false;
  const { shell, area } = frame();
  root.append(shell);
  const viewport = { width: area.clientWidth, height: area.clientHeight };
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d");
  if (!ctx || viewport.width <= 0 || viewport.height <= 0) {
    shell.remove();
    return false;
  }
  // As the editor's first frame (FirstFrame.tsx): the image fitted, every box shown at
  // the default threshold, none selected.
  canvas.className = "first-frame";
  canvas.style.width = `${viewport.width}px`;
  canvas.style.height = `${viewport.height}px`;
  const size = drawnSize(start.image, null, preview);
  paintFrame(canvas, ctx, {
    image: preview,
    size,
    viewport,
    view: fitView(size, viewport),
    boxes: withIds(start.annotations.boxes),
    selected: new Set(),
    threshold: DEFAULT_THRESHOLD,
    colors: start.project.class_colors,
    classNames: start.project.classes,
  });
  area.append(canvas);
  requestAnimationFrame(() => performance.mark("oculab:editor-ready"));
  return true;
}
