// When a box's label (class and confidence) is drawn. With hundreds of predictions the
// labels would cover the image, so a box shows its label only when it is big enough
// on screen and the view is not zoomed far out; the selected and the hovered box
// always show theirs.

/** Narrower on screen than this, a box's label is hidden. */
export const LABEL_MIN_BOX_PX = 40;
/** Below this zoom (screen pixels per image pixel) labels are hidden. */
export const LABEL_MIN_SCALE = 0.15;

export function showsLabel(boxWidthImagePx: number, scale: number, emphasised: boolean): boolean {
  if (emphasised) return true;
  return scale >= LABEL_MIN_SCALE && boxWidthImagePx * scale >= LABEL_MIN_BOX_PX;
}
