import { describe, expect, it } from "vitest";
import { addClasses, classListProblem, moveClass, removeClass, splitNames } from "./classList";
import { PALETTE } from "./palette";

describe("the class list", () => {
  it("takes names one per line or separated by commas", () => {
    expect(splitNames(" car, person\nbicycle\n\n,")).toEqual(["car", "person", "bicycle"]);
  });

  it("gives new classes the palette colour of their position", () => {
    const { list, error } = addClasses([{ name: "car", color: "#000000" }], "person, bus");
    expect(error).toBeNull();
    expect(list).toEqual([
      { name: "car", color: "#000000" },
      { name: "person", color: PALETTE[1] },
      { name: "bus", color: PALETTE[2] },
    ]);
  });

  it("skips a name already in the list, ignoring case, and says so", () => {
    const { list, error } = addClasses([{ name: "Car", color: "#000000" }], "car, truck");
    expect(list.map((c) => c.name)).toEqual(["Car", "truck"]);
    expect(error).toMatch(/car/);
  });

  it("moves and removes without touching the other classes", () => {
    const list = addClasses([], "a, b, c").list;
    expect(moveClass(list, 2, -1).map((c) => c.name)).toEqual(["a", "c", "b"]);
    expect(moveClass(list, 0, -1)).toBe(list);
    expect(removeClass(list, 1).map((c) => c.name)).toEqual(["a", "c"]);
  });

  it("finds blank and duplicate names", () => {
    expect(classListProblem([{ name: " ", color: "#000000" }])).toMatch(/no name/);
    expect(
      classListProblem([
        { name: "dog", color: "#000000" },
        { name: "Dog ", color: "#000000" },
      ]),
    ).toMatch(/twice/);
    expect(classListProblem(addClasses([], "a, b").list)).toBeNull();
  });
});
