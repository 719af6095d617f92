// What the predict playground shows of a batch's boxes: the ones at or above the
// threshold (the request asked for everything above LOWEST_CONF once; moving the
// slider never asks the server again) and how many of each class.
import type { Schemas } from "../../api/client";

export type PredictedImage = Schemas["PredictedImage"];
export type PredictedBox = Schemas["PredictedBox"];

/** The confidence the playground asks the server for: the slider filters from there. */
export const LOWEST_CONF = 0.001;

export function visibleBoxes(image: PredictedImage, threshold: number): PredictedBox[] {
  return image.boxes.filter((box) => box.confidence >= threshold);
}

/** Boxes per class name over the images, most frequent first, then by name. */
export function classCounts(images: readonly PredictedImage[], threshold: number): [string, number][] {
  const counts = new Map<string, number>();
  for (const image of images) {
    for (const box of visibleBoxes(image, threshold)) {
      counts.set(box.class_name, (counts.get(box.class_name) ?? 0) + 1);
    }
  }
  return [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}

/** "0.87" for a box label: two decimals, as people read scores; three below 0.01. */
export function formatConfidence(confidence: number): string {
  return confidence.toFixed(confidence < 0.01 ? 3 : 2);
}
