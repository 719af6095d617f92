import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { json, mockApi, renderRoutes } from "../../test/render";
import type { Job } from "./format";
import { JobsPage } from "./JobsPage";

function job(id: number, extra: Partial<Job> = {}): Job {
  return {
    id,
    kind: "datasets.export",
    project_id: 3,
    state: "succeeded",
    progress: 1,
    message: "",
    pool: "cpu",
    priority: 0,
    position: null,
    worker: "host-1",
    gpu: null,
    attempts: 1,
    max_attempts: 3,
    created_by: 1,
    created_by_name: "ada",
    created_at: "2025-01-01T10:00:00Z",
    started_at: "2025-01-01T10:00:01Z",
    finished_at: "2025-01-01T10:00:05Z",
    error: null,
    params: {},
    result: {},
    has_artifact: true,
    ...extra,
  };
}

afterEach(() => vi.unstubAllGlobals());

describe("the jobs list", () => {
  it("says in words what each job is and where a waiting one stands", async () => {
    const requests = mockApi({
      "GET /api/jobs": () =>
        json({
          items: [
            job(9, { kind: "training.train", state: "queued", pool: "gpu", position: 3, worker: null, started_at: null, finished_at: null }),
            job(8, { kind: "autolabel.run", state: "running", pool: "gpu", progress: 0.4, gpu: 1, finished_at: null }),
            job(7),
          ],
          next_cursor: null,
        }),
      "GET /api/projects": () => json({ items: [{ id: 3, name: "Birds" }], next_cursor: null }),
    });
    renderRoutes([{ path: "/jobs", element: <JobsPage /> }], "/jobs");
    const waiting = await screen.findByRole("row", { name: /Job 9: training/ });
    expect(waiting).toHaveTextContent("3rd in the GPU queue");
    expect(waiting).toHaveTextContent("waiting");
    const running = screen.getByRole("row", { name: /Job 8: auto-label/ });
    expect(screen.getByRole("progressbar", { name: "Progress of job 8" })).toHaveAttribute("value", "40");
    expect(running).toHaveTextContent("host-1, GPU 1");
    expect(screen.getByRole("row", { name: /Job 7: export/ })).toHaveTextContent("4 s");
    await waitFor(() => expect(screen.getAllByRole("link", { name: "Birds" })).toHaveLength(3));
    const url = new URL(requests.find((r) => r.url.includes("/api/jobs"))!.url);
    expect(url.searchParams.get("mine")).toBe("true");

    await userEvent.setup().click(screen.getByLabelText("All jobs I can see"));
    await waitFor(() =>
      expect(requests.some((r) => r.url.includes("/api/jobs") && new URL(r.url).searchParams.get("mine") === "false")).toBe(true),
    );
  });
});
