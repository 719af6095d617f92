import { describe, expect, it } from "vitest";
import { safeNext, signInPath } from "./next";

describe("where sign-in returns to", () => {
  it.each([
    ["/projects/3?status=reviewed", "/projects/3?status=reviewed"],
    [null, "/projects"],
    ["https://evil.example/", "/projects"],
    ["//evil.example/", "/projects"],
    ["/\\evil.example", "/projects"],
    ["/signin?next=/x", "/projects"],
  ])("safeNext(%s) is %s", (next, expected) => {
    expect(safeNext(next)).toBe(expected);
  });

  it("remembers the page the user was on", () => {
    expect(signInPath({ pathname: "/projects/3", search: "?status=predicted" })).toBe(
      "/signin?next=%2Fprojects%2F3%3Fstatus%3Dpredicted",
    );
    expect(signInPath({ pathname: "/projects" })).toBe("/signin");
  });
});
