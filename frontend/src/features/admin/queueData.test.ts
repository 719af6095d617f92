import { describe, expect, it } from "vitest";
import {
  appendHistory,
  formatAge,
  isStale,
  kindLabel,
  ordinal,
  type QueuedJob,
  type QueueView,
  sameRow,
  sparkPath,
} from "./queueData";

function view(gpus: Record<string, unknown>[], stamp = "2026-01-01T00:00:00Z"): QueueView {
  return {
    generated_at: stamp,
    heartbeat_interval_seconds: 5,
    heartbeat_timeout_seconds: 30,
    pools: [],
    jobs: [],
    users: [],
    workers: [
      {
        id: "w1",
        hostname: "gpu-01",
        pools: ["gpu"],
        slots: 1,
        gpus,
        started_at: stamp,
        last_heartbeat: stamp,
        draining: false,
        current_jobs: [],
        version: "0.1.0",
        torch_version: null,
        cuda_version: null,
        driver_version: null,
      },
    ],
  };
}

describe("queue data", () => {
  it("names job kinds in words and keeps unknown ones", () => {
    expect(kindLabel("training.train")).toBe("Training");
    expect(kindLabel("custom.thing")).toBe("custom.thing");
  });

  it("formats ages and places", () => {
    expect(formatAge(-3)).toBe("0 s");
    expect(formatAge(59.9)).toBe("59 s");
    expect(formatAge(125)).toBe("2 min 5 s");
    expect(formatAge(3 * 3600 + 600)).toBe("3 h 10 min");
    expect(formatAge(50 * 3600)).toBe("2 d 2 h");
    expect([1, 2, 3, 4, 11, 12, 13, 21, 102].map(ordinal)).toEqual([
      "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "102nd",
    ]);
  });

  it("calls a heartbeat late after two missed beats", () => {
    expect(isStale(9, 5)).toBe(false);
    expect(isStale(11, 5)).toBe(true);
    expect(isStale(5, 0.5)).toBe(false);
    expect(isStale(6, 0.5)).toBe(true);
  });

  it("keeps the last samples per GPU, as percentages, and drops GPUs that left", () => {
    let history = appendHistory(new Map(), view([{ index: 0, utilization: 10, memory_used: 20, memory_total: 80 }]), 3);
    for (const u of [20, 30, 40]) {
      history = appendHistory(history, view([{ index: 0, utilization: u, memory_used: 40, memory_total: 80 }]), 3);
    }
    expect(history.get("w1/0")).toEqual({ utilization: [20, 30, 40], memory: [50, 50, 50] });
    // A GPU that reports no numbers keeps its history rather than plotting zeros.
    const blank = appendHistory(history, view([{ index: 0 }]), 3);
    expect(blank.get("w1/0")).toEqual(history.get("w1/0"));
    expect(appendHistory(history, view([])).size).toBe(0);
  });

  it("draws the newest sample at the right edge, 100% at the top", () => {
    expect(sparkPath([], 100, 20)).toBe("");
    expect(sparkPath([0, 100], 100, 20, 2)).toBe("M0.0,20.0L100.0,0.0");
    expect(sparkPath([50], 100, 20, 11)).toBe("M100.0,10.0");
    expect(sparkPath([150, -5], 10, 10, 2)).toBe("M0.0,0.0L10.0,10.0");
  });

  it("redraws a row only when something it shows changed", () => {
    const job = { id: 1, state: "queued", position: 2, priority: 0, progress: 0 } as QueuedJob;
    expect(sameRow(job, { ...job })).toBe(true);
    expect(sameRow(job, { ...job, position: 1 })).toBe(false);
    expect(sameRow(job, { ...job, priority: 5 })).toBe(false);
  });
});
