import { describe, expect, it } from "vitest";
import { LABEL_MIN_BOX_PX, LABEL_MIN_SCALE, showsLabel } from "./labels";

describe("showsLabel", () => {
  it("hides the label of a box narrower than the minimum on screen", () => {
    expect(showsLabel(100, 0.5, false)).toBe(true); // 50 px on screen
    expect(showsLabel(LABEL_MIN_BOX_PX, 1, false)).toBe(true);
    expect(showsLabel(70, 0.5, false)).toBe(false); // 35 px on screen
  });

  it("shows a label again once zooming in makes the box big enough", () => {
    expect(showsLabel(60, 0.5, false)).toBe(false);
    expect(showsLabel(60, 1, false)).toBe(true);
  });

  it("hides every label when zoomed far out, even of big boxes", () => {
    expect(showsLabel(4000, LABEL_MIN_SCALE * 0.9, false)).toBe(false);
    expect(showsLabel(4000, LABEL_MIN_SCALE, false)).toBe(true);
  });

  it("always shows the selected or hovered box's label", () => {
    expect(showsLabel(5, 0.05, true)).toBe(true);
  });
});
