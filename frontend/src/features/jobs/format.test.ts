import { describe, expect, it } from "vitest";
import {
  appendLines,
  atBottom,
  formatDuration,
  kindLabel,
  type LogLine,
  ordinal,
  percent,
  positionText,
  runTime,
  waitTime,
} from "./format";

describe("ordinal", () => {
  it.each([
    [1, "1st"],
    [2, "2nd"],
    [3, "3rd"],
    [4, "4th"],
    [11, "11th"],
    [12, "12th"],
    [13, "13th"],
    [21, "21st"],
    [22, "22nd"],
    [23, "23rd"],
    [101, "101st"],
    [111, "111th"],
    [112, "112th"],
    [1000, "1000th"],
  ])("%i is %s", (n, word) => expect(ordinal(n)).toBe(word));
});

describe("kindLabel", () => {
  it("names the built-in kinds in words and keeps a plugin's own", () => {
    expect(kindLabel("datasets.import")).toBe("import");
    expect(kindLabel("datasets.export")).toBe("export");
    expect(kindLabel("training.train")).toBe("training");
    expect(kindLabel("autolabel.run")).toBe("auto-label");
    expect(kindLabel("models.inspect")).toBe("model inspection");
    expect(kindLabel("models.predict")).toBe("predict");
    expect(kindLabel("lab.segment")).toBe("lab.segment");
  });
});

describe("positionText", () => {
  const queued = { state: "queued" as const, pool: "gpu" };
  it("says where a waiting job stands in its pool's queue", () => {
    expect(positionText({ ...queued, position: 3 })).toBe("3rd in the GPU queue");
    expect(positionText({ ...queued, position: 1 })).toBe("Next in the GPU queue");
    expect(positionText({ ...queued, position: 0 })).toBe("About to start");
    expect(positionText({ ...queued, position: null })).toBe("Waiting in the GPU queue");
    expect(positionText({ ...queued, pool: "cpu", position: 22 })).toBe("22nd in the CPU queue");
    expect(positionText({ ...queued, pool: "a100", position: 2 })).toBe("2nd in the a100 queue");
  });
  it("says nothing once the job left the queue", () => {
    expect(positionText({ state: "running", pool: "gpu", position: null })).toBeNull();
  });
});

describe("formatDuration", () => {
  it.each([
    [-5, "0 s"],
    [0, "0 s"],
    [999, "0 s"],
    [4_000, "4 s"],
    [59_999, "59 s"],
    [65_000, "1 min 05 s"],
    [3_600_000, "1 h 00 min"],
    [2 * 3_600_000 + 3 * 60_000 + 59_000, "2 h 03 min"],
    [3 * 86_400_000 + 4 * 3_600_000, "3 d 4 h"],
  ])("%i ms is %s", (ms, text) => expect(formatDuration(ms)).toBe(text));
});

describe("runTime and waitTime", () => {
  const now = Date.parse("2025-01-01T10:00:00Z");
  it("runs until now while running, until the end once finished, not before it starts", () => {
    expect(runTime({ state: "running", started_at: "2025-01-01T09:59:00Z", finished_at: null }, now)).toBe(60_000);
    expect(
      runTime({ state: "succeeded", started_at: "2025-01-01T09:00:00Z", finished_at: "2025-01-01T09:00:30Z" }, now),
    ).toBe(30_000);
    expect(runTime({ state: "queued", started_at: null, finished_at: null }, now)).toBeNull();
    // Canceled while waiting: it never ran.
    expect(runTime({ state: "canceled", started_at: null, finished_at: "2025-01-01T09:00:00Z" }, now)).toBeNull();
  });
  it("counts the wait of queued jobs only", () => {
    expect(waitTime({ state: "queued", created_at: "2025-01-01T09:58:00Z" }, now)).toBe(120_000);
    expect(waitTime({ state: "running", created_at: "2025-01-01T09:58:00Z" }, now)).toBeNull();
  });
});

describe("percent", () => {
  it("clamps and rounds", () => {
    expect(percent(0.456)).toBe(46);
    expect(percent(1.5)).toBe(100);
    expect(percent(-1)).toBe(0);
    expect(percent(Number.NaN)).toBe(0);
  });
});

describe("appendLines", () => {
  const lines = (...ids: number[]): LogLine[] => ids.map((id) => ({ id, line: `line ${id}` }));
  it("skips lines already held, as when the stream replays the history", () => {
    const held = lines(1, 2, 3);
    expect(appendLines(held, lines(2, 3, 4, 5), 100).map((l) => l.id)).toEqual([1, 2, 3, 4, 5]);
  });
  it("returns the same array when nothing is new (no re-render)", () => {
    const held = lines(1, 2);
    expect(appendLines(held, lines(1, 2), 100)).toBe(held);
  });
  it("drops duplicates within one batch", () => {
    expect(appendLines([], lines(1, 1, 2, 2), 100).map((l) => l.id)).toEqual([1, 2]);
  });
  it("puts history that lands after live lines in its place", () => {
    expect(appendLines(lines(7, 8), lines(1, 2, 7), 100).map((l) => l.id)).toEqual([1, 2, 7, 8]);
    const held = lines(3, 4);
    expect(appendLines(held, lines(3), 100)).toBe(held);
  });
  it("keeps only the newest lines beyond the cap", () => {
    expect(appendLines(lines(1, 2, 3), lines(4, 5), 3).map((l) => l.id)).toEqual([3, 4, 5]);
  });
});

describe("atBottom", () => {
  it("is true at the end, with a little slack, and false when scrolled up", () => {
    expect(atBottom({ scrollTop: 600, clientHeight: 400, scrollHeight: 1000 })).toBe(true);
    expect(atBottom({ scrollTop: 597, clientHeight: 400, scrollHeight: 1000 })).toBe(true);
    expect(atBottom({ scrollTop: 500, clientHeight: 400, scrollHeight: 1000 })).toBe(false);
    expect(atBottom({ scrollTop: 0, clientHeight: 400, scrollHeight: 300 })).toBe(true);
  });
});
