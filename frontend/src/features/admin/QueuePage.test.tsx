import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { json, mockApi, renderRoutes } from "../../test/render";
import { QueuePage } from "./QueuePage";
import type { QueuedJob, QueueView } from "./queueData";

const NOW = "2026-01-01T12:00:00Z";

function job(id: number, overrides: Partial<QueuedJob> = {}): QueuedJob {
  return {
    id,
    kind: "training.train",
    project_id: 3,
    project_name: "Cats",
    state: "queued",
    pool: "gpu",
    priority: 0,
    position: id,
    progress: 0,
    message: "",
    worker: null,
    gpu: null,
    attempts: 0,
    max_attempts: 3,
    created_by: 7,
    created_by_name: "alice",
    created_at: "2026-01-01T11:58:00Z",
    started_at: null,
    cancel_requested: false,
    ...overrides,
  };
}

function queueView(): QueueView {
  return {
    generated_at: NOW,
    heartbeat_interval_seconds: 5,
    heartbeat_timeout_seconds: 30,
    pools: [
      { name: "gpu", gpu: true, queued: 2, running: 1, workers: 1, slots: 1, gpus: 1, per_user_limit: 2 },
      { name: "cpu", gpu: false, queued: 0, running: 0, workers: 0, slots: 0, gpus: 0, per_user_limit: 4 },
    ],
    jobs: [
      job(9, { state: "running", position: null, worker: "w1", gpu: 0, progress: 0.5, started_at: "2026-01-01T11:59:00Z" }),
      job(1),
      job(2, { kind: "autolabel.run", created_by_name: "bob" }),
    ],
    workers: [
      {
        id: "w1",
        hostname: "gpu-box",
        pools: ["gpu"],
        slots: 1,
        gpus: [{ index: 0, name: "H100", utilization: 87, memory_used: 40 * 2 ** 30, memory_total: 80 * 2 ** 30 }],
        started_at: NOW,
        last_heartbeat: "2026-01-01T11:59:00Z",
        draining: false,
        current_jobs: [9],
        version: "0.1.0",
        torch_version: "2.5.1+cu124",
        cuda_version: "12.4",
        driver_version: "550.54.15",
      },
    ],
    users: [{ user_id: 7, username: "alice", running: { gpu: 1 }, queued: { gpu: 2 } }],
  };
}

describe("QueuePage", () => {
  // jsdom lays nothing out: give the virtualised table's scroller a height.
  beforeEach(() => {
    vi.spyOn(HTMLElement.prototype, "clientHeight", "get").mockReturnValue(600);
    vi.spyOn(HTMLElement.prototype, "clientWidth", "get").mockReturnValue(1000);
  });
  afterEach(() => {
    vi.unstubAllGlobals();
    vi.restoreAllMocks();
  });

  it("shows pools, the queue in order, workers with GPU sparklines, and usage", async () => {
    mockApi({ "GET /api/admin/queue": () => json(queueView()), "GET /api/admin/quotas": () => json([]) });
    renderRoutes([{ path: "/admin/queue", element: <QueuePage /> }], "/admin/queue");
    const table = await screen.findByRole("table", { name: "Queue" });
    const rows = within(table).getAllByRole("row").slice(1);
    expect(rows.map((r) => r.getAttribute("data-job-id"))).toEqual(["9", "1", "2"]);
    expect(rows[0]).toHaveTextContent("Running on w1 · GPU 0 · 50%");
    expect(rows[1]).toHaveTextContent("1st in line");
    expect(rows[2]).toHaveTextContent("Auto-labeling");
    expect(rows[2]).toHaveTextContent("2 min 0 s");
    expect(screen.getByRole("img", { name: "GPU 0 of gpu-box utilisation: 87%" })).toBeInTheDocument();
    expect(screen.getByRole("img", { name: "GPU 0 of gpu-box memory: 50% (40.0 of 80.0 GiB)" })).toBeInTheDocument();
    expect(screen.getByRole("status")).toHaveTextContent("Polling every 2 s");
    // Its last heartbeat is a minute old with one due every 5 s.
    const worker = screen.getByRole("listitem", { name: "Worker w1 on gpu-box" });
    expect(within(worker).getByText("heartbeat 1 min 0 s ago (late)")).toHaveClass("stale");
    expect(worker).toHaveTextContent("Oculab 0.1.0 · torch 2.5.1+cu124 · CUDA 12.4 · driver 550.54.15");
    expect(screen.getByRole("table", { name: "Jobs per user" })).toHaveTextContent("alice1 gpu2 gpu");
  });

  it("says a worker has no NVIDIA driver rather than a driver called none", async () => {
    const view = queueView();
    view.workers = view.workers.map((w) => ({ ...w, torch_version: "2.14.1+cpu", cuda_version: null, driver_version: null }));
    mockApi({ "GET /api/admin/queue": () => json(view), "GET /api/admin/quotas": () => json([]) });
    renderRoutes([{ path: "/admin/queue", element: <QueuePage /> }], "/admin/queue");
    const worker = await screen.findByRole("listitem", { name: "Worker w1 on gpu-box" });
    expect(worker).toHaveTextContent("Oculab 0.1.0 · torch 2.14.1+cpu · CUDA none · no NVIDIA driver");
  });

  it("changes a waiting job's priority, cancels after confirming, drains a worker", async () => {
    const requests = mockApi({
      "GET /api/admin/queue": () => json(queueView()),
      "GET /api/admin/quotas": () => json([]),
      "POST /api/admin/jobs/2/priority": () => json({}),
      "POST /api/jobs/1/cancel": () => json({}),
      "POST /api/admin/workers/w1/drain": () => json({ id: "w1", draining: true }),
    });
    const user = userEvent.setup();
    renderRoutes([{ path: "/admin/queue", element: <QueuePage /> }], "/admin/queue");
    await user.click(await screen.findByRole("button", { name: "Change priority of job 2" }));
    const priority = screen.getByRole("spinbutton", { name: "Priority" });
    await user.clear(priority);
    await user.type(priority, "5");
    await user.click(screen.getByRole("button", { name: "Save priority" }));
    await waitFor(() => expect(requests.some((r) => r.url.endsWith("/api/admin/jobs/2/priority"))).toBe(true));
    const sent = requests.find((r) => r.url.endsWith("/priority"));
    expect(await sent?.json()).toEqual({ priority: 5 });
    // No priority lever on a running job.
    expect(screen.queryByRole("button", { name: "Change priority of job 9" })).toBeNull();

    await user.click(screen.getByRole("button", { name: "Cancel job 1" }));
    expect(requests.some((r) => r.url.endsWith("/cancel"))).toBe(false);
    await user.click(screen.getByRole("button", { name: "Cancel the job" }));
    await waitFor(() => expect(requests.some((r) => r.url.endsWith("/api/jobs/1/cancel"))).toBe(true));

    await user.click(screen.getByRole("button", { name: "Drain worker w1" }));
    await waitFor(() => expect(requests.some((r) => r.url.endsWith("/api/admin/workers/w1/drain"))).toBe(true));
    const drained = requests.find((r) => r.url.endsWith("/drain"));
    expect(await drained?.json()).toEqual({ draining: true });
  });

  it("sets a quota for a user found by name", async () => {
    const requests = mockApi({
      "GET /api/admin/queue": () => json(queueView()),
      "GET /api/admin/quotas": () => json([]),
      "GET /api/users": () => json([{ id: 7, username: "alice", display_name: null, email: null }]),
      "PUT /api/admin/quotas": () => json([{ user_id: 7, username: "alice", pool: "gpu", max_running: 3 }]),
    });
    const user = userEvent.setup();
    renderRoutes([{ path: "/admin/queue", element: <QueuePage /> }], "/admin/queue");
    await user.type(await screen.findByRole("searchbox", { name: "User" }), "ali");
    await user.click(await screen.findByRole("button", { name: "Choose alice" }));
    const max = screen.getByRole("spinbutton", { name: "Max running jobs" });
    await user.clear(max);
    await user.type(max, "3");
    await user.click(screen.getByRole("button", { name: "Set quota" }));
    expect(await screen.findByRole("button", { name: "Remove the gpu quota of alice" })).toBeInTheDocument();
    const put = requests.find((r) => r.method === "PUT");
    expect(await put?.json()).toEqual({ user_id: 7, pool: "gpu", max_running: 3 });
  });
});
