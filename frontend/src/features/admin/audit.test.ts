import { describe, expect, it } from "vitest";
import { detailsText, localToIso, rangeProblem } from "./audit";

describe("localToIso", () => {
  it("reads a datetime-local value in the viewer's zone", () => {
    expect(localToIso("2025-01-31T08:00")).toBe(new Date(2025, 0, 31, 8, 0).toISOString());
    expect(localToIso("2025-01-31T08:00:30")).toBe(new Date(2025, 0, 31, 8, 0, 30).toISOString());
  });
  it("refuses what is not a time instead of guessing", () => {
    expect(localToIso("")).toBeNull();
    expect(localToIso(null)).toBeNull();
    expect(localToIso("yesterday")).toBeNull();
    expect(localToIso("2025-02-31T08:00")).toBeNull();
    expect(localToIso("2025-01-31")).toBeNull();
  });
});

describe("rangeProblem", () => {
  it("wants the start before the end", () => {
    expect(rangeProblem({ since: "2025-01-02T00:00", until: "2025-01-01T00:00" })).toMatch(/before the end/);
    expect(rangeProblem({ since: "2025-01-01T00:00", until: "2025-01-01T00:00" })).toMatch(/before the end/);
    expect(rangeProblem({ since: "2025-01-01T00:00", until: "2025-01-02T00:00" })).toBeNull();
    expect(rangeProblem({ since: "2025-01-01T00:00", until: null })).toBeNull();
    expect(rangeProblem({ since: null, until: null })).toBeNull();
    expect(rangeProblem({ since: "2025-13-01T00:00", until: null })).toMatch(/start is not/);
  });
});

describe("detailsText", () => {
  it("writes details as plain text", () => {
    expect(detailsText({})).toBe("");
    expect(detailsText({ role: "viewer", is_admin: true, ids: [1, 2] })).toBe("role: viewer, is_admin: true, ids: [1,2]");
    expect(detailsText({ name: "<b>x</b>" })).toBe("name: <b>x</b>");
  });
});
