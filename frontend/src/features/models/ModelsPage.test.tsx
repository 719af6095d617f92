import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { json, mockApi, renderRoutes } from "../../test/render";
import { ModelsPage } from "./ModelsPage";

const base = {
  project_id: 3,
  error: null,
  filename: "weights.pt",
  sha256: "ab".repeat(32),
  size_bytes: 5_000_000,
  task: "detect",
  class_names: ["cat", "dog"],
  imgsz: 640,
  parameters: 2_600_000,
  architecture: "yolo11n",
  base: null,
  base_model_id: null,
  job_id: null,
  dataset_snapshot: null,
  hyperparams: {},
  metrics: {},
  created_by: 1,
  created_at: "2025-01-01T00:00:00Z",
  promoted: false,
};
const MODELS = [
  {
    ...base,
    id: 9,
    name: "trained-v2",
    state: "ready",
    source: "training",
    base: "yolo11n.yaml",
    job_id: 41,
    dataset_snapshot: "0123456789abcdef".repeat(4),
    metrics: { "mAP50-95": 0.51234, mAP50: 0.8, precision: 0.7, recall: 0.6 },
  },
  { ...base, id: 8, name: "coco", state: "ready", source: "upload", promoted: true },
  { ...base, id: 7, name: "evil", state: "failed", source: "upload", error: "refused: os.system" },
];

function project(role: string) {
  return { id: 3, name: "Shapes", role, classes: ["cat", "dog"], class_colors: ["#ff0000", "#00ff00"] };
}

afterEach(() => vi.unstubAllGlobals());

describe("the model registry", () => {
  it("shows lineage, metrics, state and the owner's actions", async () => {
    const requests = mockApi({
      "GET /api/projects/3": () => json(project("owner")),
      "GET /api/models": () => json({ items: MODELS, next_cursor: null }),
      "POST /api/models/9/promote": () => json({ ...MODELS[0], promoted: true }),
    });
    renderRoutes([{ path: "/projects/:projectId/models", element: <ModelsPage /> }], "/projects/3/models");
    const trained = (await screen.findByRole("rowheader", { name: /trained-v2/ })).closest("tr") as HTMLElement;
    expect(within(trained).getByRole("link", { name: "training run" })).toHaveAttribute(
      "href",
      "/projects/3/training/41",
    );
    expect(within(trained).getByRole("link", { name: "job 41" })).toHaveAttribute("href", "/jobs/41");
    expect(within(trained).getByText("0.512")).toBeInTheDocument();
    expect(within(trained).getByText("0123456789ab")).toBeInTheDocument();
    const evil = screen.getByRole("rowheader", { name: /evil/ }).closest("tr") as HTMLElement;
    expect(within(evil).getByText("Refused")).toBeInTheDocument();
    expect(within(evil).getByText("refused: os.system")).toBeInTheDocument();
    expect(within(evil).queryByRole("button", { name: /Promote/ })).not.toBeInTheDocument();
    const coco = screen.getByRole("rowheader", { name: /coco/ });
    expect(within(coco).getByText("Promoted")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Upload weights" })).toBeInTheDocument();

    const user = userEvent.setup();
    await user.click(within(trained).getByRole("button", { name: "Promote trained-v2" }));
    const dialog = screen.getByRole("dialog", { name: "Promote trained-v2?" });
    expect(dialog).toHaveTextContent("in place of coco");
    await user.click(within(dialog).getByRole("button", { name: "Promote" }));
    await vi.waitFor(() =>
      expect(requests.some((r) => r.method === "POST" && r.url.endsWith("/api/models/9/promote"))).toBe(true),
    );
  });

  it("offers viewers no upload, promote or auto-label", async () => {
    mockApi({
      "GET /api/projects/3": () => json(project("viewer")),
      "GET /api/models": () => json({ items: MODELS, next_cursor: null }),
    });
    renderRoutes([{ path: "/projects/:projectId/models", element: <ModelsPage /> }], "/projects/3/models");
    await screen.findByRole("rowheader", { name: /trained-v2/ });
    expect(screen.queryByRole("button", { name: "Upload weights" })).not.toBeInTheDocument();
    expect(screen.queryByRole("button", { name: /Promote/ })).not.toBeInTheDocument();
    expect(screen.queryByRole("button", { name: "Auto-label" })).not.toBeInTheDocument();
    expect(screen.getAllByRole("link", { name: /Download/ })).toHaveLength(3);
    expect(screen.getByRole("link", { name: "Predict playground" })).toBeInTheDocument();
  });

  it("lets annotators auto-label with the promoted model by default", async () => {
    const requests = mockApi({
      "GET /api/projects/3": () => json(project("annotator")),
      "GET /api/models": () => json({ items: MODELS, next_cursor: null }),
      "POST /api/projects/3/jobs/autolabel": () => json({ detail: "model 8 is not ready (pending)" }, 422),
    });
    renderRoutes([{ path: "/projects/:projectId/models", element: <ModelsPage /> }], "/projects/3/models");
    const user = userEvent.setup();
    await user.click(await screen.findByRole("button", { name: "Auto-label" }));
    const dialog = screen.getByRole("dialog", { name: "Auto-label images" });
    expect(within(dialog).getByLabelText("Model")).toHaveValue("8");
    await user.click(within(dialog).getByLabelText("Predicted images (replace earlier predictions)"));
    await user.click(within(dialog).getByRole("button", { name: "Start auto-labeling" }));
    expect(await within(dialog).findByRole("alert")).toHaveTextContent("model 8 is not ready (pending)");
    const sent = requests.find((r) => r.method === "POST");
    expect(await sent?.json()).toEqual({ model_id: 8, conf: 0.25, iou: 0.7, status: "predicted" });
  });
});
