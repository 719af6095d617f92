import { describe, expect, it } from "vitest";
import {
  actualSize,
  boxAt,
  clipRect,
  fitView,
  intersects,
  keepInside,
  MAX_SCALE,
  movedTo,
  nudge,
  nudgeStep,
  rectFromPoints,
  screenToImage,
  toNormalised,
  toPixels,
  zoomAround,
} from "./geometry";

const IMAGE = { width: 4000, height: 3000 };

describe("normalised ↔ pixel", () => {
  it("converts both ways", () => {
    const box = { x: 0.25, y: 0.5, w: 0.1, h: 0.2 };
    expect(toPixels(box, IMAGE)).toEqual({ x: 1000, y: 1500, width: 400, height: 600 });
    expect(toNormalised({ x: 1000, y: 1500, width: 400, height: 600 }, IMAGE)).toEqual(box);
  });

  it("turns a rectangle dragged up and left around", () => {
    expect(toNormalised({ x: 1400, y: 2100, width: -400, height: -600 }, IMAGE)).toEqual({
      x: 0.25,
      y: 0.5,
      w: 0.1,
      h: 0.2,
    });
  });

  it("cuts a rectangle to the image and keeps x + w <= 1 exactly", () => {
    const n = toNormalised({ x: -100, y: 2900, width: 300, height: 400 }, IMAGE);
    expect(n.x).toBe(0);
    expect(n.w).toBeCloseTo(200 / 4000, 12);
    expect(n.y + n.h).toBeLessThanOrEqual(1);
    expect(n.h).toBeCloseTo(100 / 3000, 12);
    // Float sums that would land a hair past the edge do not.
    for (const x of [3999.7, 1234.5678, 0.1 + 0.2]) {
      const edge = toNormalised({ x, y: 0, width: 4000 - x + 5, height: 10 }, IMAGE);
      expect(edge.x + edge.w).toBeLessThanOrEqual(1);
    }
  });

  it("rounds nothing off a box that a round trip leaves alone", () => {
    const box = { x: 0.123456789, y: 0.987654321 - 0.2, w: 0.2, h: 0.2 };
    const back = toNormalised(toPixels(box, IMAGE), IMAGE);
    expect(back.x).toBeCloseTo(box.x, 12);
    expect(back.y).toBeCloseTo(box.y, 12);
  });
});

describe("clamping at the edges", () => {
  it("a resize stops at the edges (the rectangle is cut)", () => {
    expect(clipRect({ x: 3900, y: -50, width: 300, height: 100 }, IMAGE)).toEqual({
      x: 3900,
      y: 0,
      width: 100,
      height: 50,
    });
  });

  it("a move stops at the edges (the rectangle keeps its size)", () => {
    expect(keepInside({ x: 3900, y: -50, width: 300, height: 100 }, IMAGE)).toEqual({
      x: 3700,
      y: 0,
      width: 300,
      height: 100,
    });
    // Larger than the image: as large as the image.
    expect(keepInside({ x: 10, y: 10, width: 5000, height: 10 }, IMAGE).width).toBe(4000);
  });

  it("a drag between two points is cut to the image", () => {
    expect(rectFromPoints({ x: 3950, y: 2950 }, { x: 4100, y: 3100 }, IMAGE)).toEqual({
      x: 3950,
      y: 2950,
      width: 50,
      height: 50,
    });
  });

  it("a dragged box lands where it was dropped, inside, with its size unchanged", () => {
    const box = { x: 0.1, y: 0.1, w: 0.3, h: 0.2 };
    expect(movedTo(box, { x: 2000, y: 1500 }, IMAGE)).toEqual({ x: 0.5, y: 0.5, w: 0.3, h: 0.2 });
    const out = movedTo(box, { x: 3900, y: -40 }, IMAGE);
    expect(out).toEqual({ x: 0.7, y: 0, w: 0.3, h: 0.2 });
  });
});

describe("keyboard nudges", () => {
  it("move by one image pixel, ten with shift", () => {
    expect(nudgeStep("ArrowLeft", false)).toEqual({ x: -1, y: 0 });
    expect(nudgeStep("ArrowDown", true)).toEqual({ x: 0, y: 10 });
    expect(nudgeStep("a", false)).toBeNull();
    const box = { x: 0.5, y: 0.5, w: 0.1, h: 0.1 };
    const right = nudge(box, 1, 0, IMAGE);
    expect(right.x).toBeCloseTo(0.5 + 1 / 4000, 12);
    expect(right.y).toBe(0.5);
    const down = nudge(box, 0, 10, IMAGE);
    expect(down.y).toBeCloseTo(0.5 + 10 / 3000, 12);
  });

  it("stop at the edges and never change the size", () => {
    const atLeft = { x: 0.0001, y: 0.3, w: 0.2, h: 0.1 };
    expect(nudge(atLeft, -10, 0, IMAGE)).toEqual({ x: 0, y: 0.3, w: 0.2, h: 0.1 });
    const atBottom = { x: 0.3, y: 0.85, w: 0.2, h: 0.15 };
    const moved = nudge(atBottom, 0, 10, IMAGE);
    expect(moved.y).toBeCloseTo(0.85, 12);
    expect(moved.y + moved.h).toBeLessThanOrEqual(1);
    expect(moved.h).toBe(0.15);
  });
});

describe("view", () => {
  it("fits the image in the viewport, centred", () => {
    const view = fitView(IMAGE, { width: 1032, height: 800 }, 16);
    expect(view.scale).toBeCloseTo(0.25, 12);
    expect(view.x).toBeCloseTo(16, 9);
    expect(view.y).toBeCloseTo((800 - 750) / 2, 9);
  });

  it("zooms around the pointer: the image point under it stays", () => {
    const view = { scale: 0.25, x: 16, y: 25 };
    const pointer = { x: 300, y: 400 };
    const before = screenToImage(view, pointer);
    const zoomed = zoomAround(view, pointer, 2);
    expect(zoomed.scale).toBe(0.5);
    const after = screenToImage(zoomed, pointer);
    expect(after.x).toBeCloseTo(before.x, 9);
    expect(after.y).toBeCloseTo(before.y, 9);
    expect(zoomAround(view, pointer, 1e6).scale).toBe(MAX_SCALE);
  });

  it("1:1 shows one image pixel per screen pixel around the centre", () => {
    const view = { scale: 0.25, x: 16, y: 25 };
    const viewport = { width: 1000, height: 800 };
    const centre = screenToImage(view, { x: 500, y: 400 });
    const one = actualSize(view, viewport);
    expect(one.scale).toBe(1);
    const after = screenToImage(one, { x: 500, y: 400 });
    expect(after.x).toBeCloseTo(centre.x, 9);
  });

  it("finds boxes in a marquee", () => {
    const marquee = { x: 100, y: 100, width: -50, height: -50 };
    expect(intersects(marquee, { x: 40, y: 40, width: 20, height: 20 })).toBe(true);
    expect(intersects(marquee, { x: 101, y: 40, width: 20, height: 20 })).toBe(false);
  });
});

describe("hit test", () => {
  const boxes = [
    { id: "big", x: 0.1, y: 0.1, w: 0.6, h: 0.6 },
    { id: "small", x: 0.3, y: 0.3, w: 0.1, h: 0.1 },
    { id: "hidden", x: 0.32, y: 0.32, w: 0.02, h: 0.02 },
  ];
  const at = (x: number, y: number, slop = 0) =>
    boxAt(boxes, { x, y }, IMAGE, slop, (b) => b.id !== "hidden");

  it("finds the smallest box under the point, so nested boxes stay reachable", () => {
    expect(at(1400, 1000)).toBe("small");
    expect(at(500, 500)).toBe("big");
    expect(at(3900, 2900)).toBeNull();
  });

  it("counts a press just outside an edge within the slop", () => {
    expect(at(398, 1000)).toBeNull();
    expect(at(398, 1000, 4)).toBe("big");
  });
});
