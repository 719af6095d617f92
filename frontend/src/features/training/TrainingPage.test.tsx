import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { json, mockApi, renderRoutes } from "../../test/render";

// uPlot reads the pixel ratio when it loads; jsdom has no matchMedia (nor canvas: the
// charts render their captions and descriptions only).
vi.hoisted(() => {
  // eslint-disable-next-line @typescript-eslint/unbound-method -- `??=` tests the method, never calls it
  window.matchMedia ??= ((query: string) => ({
    matches: false,
    media: query,
    addEventListener: () => undefined,
    removeEventListener: () => undefined,
  })) as unknown as typeof window.matchMedia;
});
import { RunPage } from "./RunPage";
import { TrainingPage } from "./TrainingPage";

const project = (role: string) => ({ id: 7, name: "Shapes", role, classes: ["square", "circle"] });

const data = (overrides: Record<string, unknown> = {}) => ({
  only_reviewed: true,
  val_fraction: 0.2,
  seed: 0,
  images: 24,
  train_images: 19,
  val_images: 5,
  boxes: 50,
  classes: [
    { class_id: 0, name: "square", boxes: 30, images: 15 },
    { class_id: 1, name: "circle", boxes: 20, images: 12 },
  ],
  problem: null,
  architectures: ["yolo11n.yaml", "yolo11s.yaml"],
  default_pool: "gpu",
  pools: [
    { name: "gpu", gpu: true, slots: 0 },
    { name: "cpu", gpu: false, slots: 1 },
  ],
  ...overrides,
});

const job = (id: number, overrides: Record<string, unknown> = {}) => ({
  id,
  kind: "training.train",
  project_id: 7,
  state: "succeeded",
  progress: 1,
  message: "",
  pool: "gpu",
  priority: 0,
  position: null,
  worker: "w1",
  gpu: 0,
  attempts: 1,
  max_attempts: 3,
  created_by: 1,
  created_by_name: "admin",
  created_at: "2024-01-01T00:00:00Z",
  started_at: "2024-01-01T00:00:00Z",
  finished_at: "2024-01-01T00:01:00Z",
  error: null,
  params: { base: "yolo11n.yaml", epochs: 2, imgsz: 64, batch: 4, val_fraction: 0.2 },
  result: { model_id: 31, metrics: { "mAP50-95": 0.4321 } },
  has_artifact: false,
  ...overrides,
});

const pages = [
  { path: "/projects/:projectId/training", element: <TrainingPage /> },
  { path: "/projects/:projectId/training/:jobId", element: <RunPage /> },
];

describe("TrainingPage", () => {
  it("lists the runs with epochs, best mAP50-95 and the model, filtered by kind", async () => {
    const requests = mockApi({
      "GET /api/projects/7": () => json(project("viewer")),
      "GET /api/jobs": () => json({ items: [job(5), job(4, { state: "running", progress: 0.5, result: null, finished_at: null })], next_cursor: null }),
    });
    renderRoutes(pages, "/projects/7/training");
    const table = await screen.findByRole("table", { name: "Training runs of Shapes" });
    const [, done, running] = within(table).getAllByRole("row");
    expect(within(done!).getByRole("cell", { name: "2 / 2" })).toBeInTheDocument();
    expect(within(done!).getByRole("cell", { name: "0.432" })).toBeInTheDocument();
    expect(within(done!).getByRole("link", { name: "Model #31" })).toHaveAttribute("href", "/projects/7/models/31");
    expect(within(running!).getByRole("cell", { name: "1 / 2" })).toBeInTheDocument();
    const list = requests.find((r) => new URL(r.url).pathname === "/api/jobs")!;
    expect(new URL(list.url).searchParams.get("kind")).toBe("training.train");
    expect(new URL(list.url).searchParams.get("project_id")).toBe("7");
    // A viewer may not train: the button is not offered.
    expect(screen.queryByRole("button", { name: "Train a model" })).not.toBeInTheDocument();
  });

  it("shows what a run would use, and starts one with the form's parameters", async () => {
    const user = userEvent.setup();
    // The new run's page follows it live; jsdom has no EventSource.
    const streams: string[] = [];
    vi.stubGlobal(
      "EventSource",
      class {
        static CLOSED = 2;
        readyState = 0;
        onopen = null;
        onerror = null;
        constructor(url: string) {
          streams.push(url);
        }
        addEventListener() {}
        close() {}
      },
    );
    const requests = mockApi({
      "GET /api/projects/7": () => json(project("owner")),
      "GET /api/jobs": () => json({ items: [], next_cursor: null }),
      "GET /api/projects/7/training-data": () => json(data()),
      "GET /api/models": () => json({ items: [{ id: 3, name: "v1", state: "ready" }], next_cursor: null }),
      "POST /api/projects/7/jobs/train": () => json(job(9, { state: "queued", progress: 0, result: null }), 202),
      "GET /api/jobs/9": () => json(job(9, { state: "queued", progress: 0, result: null })),
      "GET /api/jobs/9/metrics": () => json([]),
      "GET /api/me": () => json({ id: 1, username: "admin", is_admin: true }),
    });
    renderRoutes(pages, "/projects/7/training");
    await user.click(await screen.findByRole("button", { name: "Train a model" }));
    const dialog = screen.getByRole("dialog", { name: "Train a model" });
    expect(await within(dialog).findByText(/24 reviewed images: 19 for training, 5 for validation; 50 boxes/)).toBeInTheDocument();
    const classes = within(dialog).getByRole("table", { name: "Boxes per class" });
    expect(within(classes).getByRole("row", { name: "square 30 15" })).toBeInTheDocument();
    // The default pool has no worker now: said before submitting.
    expect(within(dialog).getByText(/No worker serves the gpu pool/)).toBeInTheDocument();
    await user.selectOptions(within(dialog).getByRole("combobox", { name: "Start from" }), "v1 (#3)");
    await user.clear(within(dialog).getByRole("spinbutton", { name: "Epochs" }));
    await user.type(within(dialog).getByRole("spinbutton", { name: "Epochs" }), "2");
    await user.clear(within(dialog).getByRole("spinbutton", { name: "Image size (px)" }));
    await user.type(within(dialog).getByRole("spinbutton", { name: "Image size (px)" }), "100");
    await user.selectOptions(within(dialog).getByRole("combobox", { name: "Pool" }), "cpu");
    const deterministic = within(dialog).getByRole("checkbox", { name: /^Deterministic/ });
    expect(deterministic).toBeChecked();
    await user.click(deterministic);
    await user.click(within(dialog).getByRole("button", { name: "Start training" }));
    expect(within(dialog).getByRole("alert")).toHaveTextContent("Image size must be a multiple of 32");
    await user.clear(within(dialog).getByRole("spinbutton", { name: "Image size (px)" }));
    await user.type(within(dialog).getByRole("spinbutton", { name: "Image size (px)" }), "64");
    await user.click(within(dialog).getByRole("button", { name: "Start training" }));
    expect(await screen.findByRole("heading", { name: "Run #9" })).toBeInTheDocument();
    expect(streams).toEqual(["/api/jobs/9/events"]);
    const post = requests.find((r) => r.method === "POST")!;
    expect(await post.json()).toEqual({
      base: 3,
      epochs: 2,
      imgsz: 64,
      batch: 16,
      val_fraction: 0.2,
      seed: 0,
      deterministic: false,
      pool: "cpu",
    });
  });

  it("refuses clearly when there is nothing to train on", async () => {
    const user = userEvent.setup();
    mockApi({
      "GET /api/projects/7": () => json(project("owner")),
      "GET /api/jobs": () => json({ items: [], next_cursor: null }),
      "GET /api/projects/7/training-data": () =>
        json(data({ images: 0, train_images: 0, val_images: 0, boxes: 0, problem: "training needs at least 2 reviewed images; this project has 0" })),
      "GET /api/models": () => json({ items: [], next_cursor: null }),
    });
    renderRoutes(pages, "/projects/7/training");
    await user.click(await screen.findByRole("button", { name: "Train a model" }));
    const dialog = screen.getByRole("dialog", { name: "Train a model" });
    expect(await within(dialog).findByRole("alert")).toHaveTextContent(
      "Cannot train: training needs at least 2 reviewed images; this project has 0.",
    );
    expect(within(dialog).getByRole("button", { name: "Start training" })).toBeDisabled();
  });
});

describe("RunPage", () => {
  it("shows a finished run's parameters, epochs and links, without a stream", async () => {
    mockApi({
      "GET /api/projects/7": () => json(project("owner")),
      "GET /api/me": () => json({ id: 1, username: "admin", is_admin: true }),
      "GET /api/jobs/5": () => json(job(5)),
      "GET /api/jobs/5/metrics": () =>
        json([
          { id: 10, created_at: "", kind: "metrics", data: { epoch: 1, "metrics/mAP50-95(B)": 0.1, "train/box_loss": 2 } },
          { id: 11, created_at: "", kind: "metrics", data: { epoch: 2, "metrics/mAP50-95(B)": 0.3, "train/box_loss": 1.5 } },
        ]),
    });
    renderRoutes(pages, "/projects/7/training/5");
    expect(await screen.findByRole("heading", { name: "Run #5" })).toBeInTheDocument();
    const table = await screen.findByRole("table", { name: "Every epoch" });
    expect(within(table).getAllByRole("row").map((r) => r.textContent)).toEqual([
      "EpochTrain box lossmAP50-95",
      "21.5000.300",
      "12.0000.100",
    ]);
    expect(screen.getByRole("figure", { name: "mAP" })).toHaveAccessibleDescription(
      "2 epochs. At epoch 2: mAP50-95 0.300 (best 0.300 at epoch 2).",
    );
    expect(screen.getByRole("link", { name: "Registered model #31" })).toHaveAttribute("href", "/projects/7/models/31");
    expect(screen.getByRole("link", { name: "Job page and log" })).toHaveAttribute("href", "/jobs/5");
    expect(screen.queryByRole("button", { name: "Cancel run" })).not.toBeInTheDocument();
  });

  it("says when the job is not a training run of this project", async () => {
    mockApi({
      "GET /api/projects/7": () => json(project("owner")),
      "GET /api/me": () => json({ id: 1, username: "admin", is_admin: true }),
      "GET /api/jobs/5": () => json(job(5, { kind: "datasets.export" })),
      "GET /api/jobs/5/metrics": () => json([]),
    });
    renderRoutes(pages, "/projects/7/training/5");
    expect(await screen.findByRole("alert")).toHaveTextContent("not a training run of this project");
  });
});
