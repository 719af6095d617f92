import { describe, expect, it } from "vitest";
import type { EditorBox } from "./boxes";
import { boxLook, FALLBACK, paintedBoxes } from "./paint";

const box = (id: string, over: Partial<EditorBox> = {}): EditorBox => ({
  id,
  class_id: 0,
  x: 0.1,
  y: 0.2,
  w: 0.3,
  h: 0.4,
  source: "manual",
  confidence: null,
  status: "accepted",
  ...over,
});
const colors = ["#112233", "#445566"];
const names = ["car", "person"];

describe("boxLook", () => {
  it("labels a prediction with its class and confidence, selected or not", () => {
    const predicted = box("a", { class_id: 1, status: "predicted", confidence: 0.876 });
    expect(boxLook(predicted, false, colors, names).label).toBe("person 0.88");
    expect(boxLook(predicted, true, colors, names).label).toBe("person 0.88");
    expect(boxLook(predicted, false, colors, names).dashed).toBe(true);
  });

  it("labels an accepted box only while it is selected, and fills it more then", () => {
    expect(boxLook(box("a"), false, colors, names).label).toBeUndefined();
    const selected = boxLook(box("a"), true, colors, names);
    expect(selected.label).toBe("car");
    expect(selected.fill).toBe("rgba(17,34,51,0.28)");
    expect(boxLook(box("a"), false, colors, names).fill).toBe("rgba(17,34,51,0.1)");
  });

  it("greys out a rejected box and gives a class without a colour the fallback", () => {
    const rejected = boxLook(box("a", { status: "rejected" }), false, colors, names);
    expect(rejected.stroke).toBe("#8a8f98");
    expect(rejected.alpha).toBeLessThan(1);
    const unknown = boxLook(box("b", { class_id: 7, status: "predicted", confidence: 0.5 }), false, colors, names);
    expect(unknown.stroke).toBe(FALLBACK);
    expect(unknown.label).toBe("class 7 0.50");
  });

  it("gives boxes that look alike the same look object (memoised shapes see no change)", () => {
    expect(boxLook(box("a"), true, colors, names)).toBe(boxLook(box("b"), true, colors, names));
  });
});

describe("paintedBoxes", () => {
  it("lists the shown boxes that are not selected, in image pixels", () => {
    const boxes = [
      box("kept"),
      box("selected"),
      box("low", { status: "predicted", confidence: 0.2 }),
      box("high", { status: "predicted", confidence: 0.9 }),
    ];
    const painted = paintedBoxes(boxes, new Set(["selected"]), 0.25, colors, names, { width: 1000, height: 500 });
    expect(painted.map((p) => p.id)).toEqual(["kept", "high"]);
    expect(painted[0]).toMatchObject({ x: 100, y: 100, w: 300, h: 200, stroke: "#112233" });
  });

  it("shows a prediction under the threshold again once the threshold drops", () => {
    const boxes = [box("low", { status: "predicted", confidence: 0.2 })];
    expect(paintedBoxes(boxes, new Set(), 0.25, colors, names, { width: 10, height: 10 })).toHaveLength(0);
    expect(paintedBoxes(boxes, new Set(), 0.1, colors, names, { width: 10, height: 10 })).toHaveLength(1);
  });
});
