import { describe, expect, it } from "vitest";
import { classCounts, visibleBoxes, type PredictedImage } from "./predictions";

const b = (class_name: string, confidence: number) => ({ class_id: 0, class_name, confidence, x: 0, y: 0, w: 1, h: 1 });
const first: PredictedImage = {
  filename: "a.png",
  width: 4,
  height: 4,
  boxes: [b("cat", 0.9), b("dog", 0.2), b("cat", 0.25)],
};
const second: PredictedImage = { filename: "b.png", width: 4, height: 4, boxes: [b("dog", 0.6), b("bird", 0.01)] };
const images = [first, second];

describe("the playground's threshold", () => {
  it("keeps boxes at or above it", () => {
    expect(visibleBoxes(first, 0.25).map((box) => box.confidence)).toEqual([0.9, 0.25]);
    expect(visibleBoxes(second, 0)).toHaveLength(2);
    expect(visibleBoxes(second, 1)).toHaveLength(0);
  });

  it("counts what it shows per class, most first", () => {
    expect(classCounts(images, 0)).toEqual([
      ["cat", 2],
      ["dog", 2],
      ["bird", 1],
    ]);
    expect(classCounts(images, 0.5)).toEqual([
      ["cat", 1],
      ["dog", 1],
    ]);
    expect(classCounts(images, 0.95)).toEqual([]);
  });
});
