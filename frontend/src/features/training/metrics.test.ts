import { describe, expect, it } from "vitest";
import {
  best,
  columns,
  durationSeconds,
  epochsDone,
  epochsFromEvents,
  formatDuration,
  mergeEpochs,
  plainNumber,
  overlayColumns,
  toEpoch,
} from "./metrics";

const MAP = "metrics/mAP50-95(B)";
const e = (epoch: number, value: number) => ({ epoch, values: { [MAP]: value } });

describe("per-epoch metrics", () => {
  it("reads an event's epoch and numeric values, and refuses one without an epoch", () => {
    expect(toEpoch({ epoch: 3, [MAP]: 0.5, "train/box_loss": 1.2, note: "x", bad: Number.NaN })).toEqual({
      epoch: 3,
      values: { [MAP]: 0.5, "train/box_loss": 1.2 },
    });
    expect(toEpoch({ [MAP]: 0.5 })).toBeNull();
    expect(toEpoch({ epoch: 0 })).toBeNull();
    expect(toEpoch({ epoch: "2" })).toBeNull();
  });

  it("keeps the first report of an epoch and the same array when nothing is new", () => {
    const first = [e(1, 0.1), e(2, 0.2)];
    expect(mergeEpochs(first, [e(2, 0.9), e(1, 0.8)])).toBe(first);
    const more = mergeEpochs(first, [e(2, 0.9), e(3, 0.3), e(3, 0.7)]);
    expect(more.map((x) => [x.epoch, x.values[MAP]])).toEqual([
      [1, 0.1],
      [2, 0.2],
      [3, 0.3],
    ]);
    // Out of order (a replay after a gap) still ends sorted.
    expect(mergeEpochs([e(1, 0), e(4, 0)], [e(2, 0), e(3, 0)]).map((x) => x.epoch)).toEqual([1, 2, 3, 4]);
  });

  it("builds epochs from GET /metrics events, without duplicates", () => {
    const event = (id: number, data: Record<string, unknown>) => ({ id, created_at: "", kind: "metrics", data });
    const epochs = epochsFromEvents([event(1, { epoch: 1, [MAP]: 0.1 }), event(2, { epoch: 1, [MAP]: 0.5 }), event(3, { epoch: 2 })]);
    expect(epochs).toEqual([e(1, 0.1), { epoch: 2, values: {} }]);
  });

  it("lays out columns for one run and for an overlay of runs with different lengths", () => {
    expect(columns([e(1, 0.1), { epoch: 2, values: {} }], [MAP])).toEqual([[1, 2], [0.1, null]]);
    expect(overlayColumns([[e(1, 0.1), e(2, 0.2)], [e(2, 0.5), e(3, 0.6)]], MAP)).toEqual([
      [1, 2, 3],
      [0.1, 0.2, null],
      [null, 0.5, 0.6],
    ]);
  });

  it("finds the best value and its epoch", () => {
    expect(best([e(1, 0.1), e(2, 0.4), e(3, 0.3)], MAP)).toEqual({ value: 0.4, epoch: 2 });
    expect(best([], MAP)).toBeNull();
  });

  it("counts epochs done from progress, and a run's duration", () => {
    expect(epochsDone({ params: { epochs: 300 }, progress: 0.5 })).toBe(150);
    expect(epochsDone({ params: {}, progress: 0.5 })).toBeNull();
    const job = { started_at: "2024-01-01T00:00:00Z", finished_at: "2024-01-01T01:02:03Z" };
    expect(formatDuration(durationSeconds(job))).toBe("1 h 2 min");
    expect(formatDuration(durationSeconds({ started_at: null, finished_at: null }))).toBe("—");
    expect(formatDuration(75)).toBe("1 min 15 s");
  });
});

describe("plainNumber", () => {
  it("shows at most three decimals, as uPlot's default format does", () => {
    expect(plainNumber(0.123456)).toBe("0.123");
    expect(plainNumber(0.25)).toBe("0.25");
    expect(plainNumber(0.0625)).toBe("0.063");
    expect(plainNumber(0.0004)).toBe("0");
  });

  it("shows whole numbers without a fraction or a grouping separator", () => {
    expect(plainNumber(300)).toBe("300");
    expect(plainNumber(12000)).toBe("12000");
  });

  it("never shows a negative zero", () => {
    expect(plainNumber(-0)).toBe("0");
    expect(plainNumber(-0.0001)).toBe("0");
    expect(plainNumber(-1.5)).toBe("-1.5");
  });
});
