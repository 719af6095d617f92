// The model registry end to end: a malicious checkpoint is refused with the reason; a
// genuine tiny YOLO model (trained here, in the set-up, by the repository's own
// generator) becomes ready, is promoted, auto-labels images into the review queue,
// draws boxes in the predict playground and downloads them as CSV, the same columns as
// the project's CSV export. The server runs predict and auto-label on its one
// CPU-backed GPU-pool slot (global-setup.ts).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Page } from "@playwright/test";
import { expect, screenshot, test } from "./fixtures";
import { apiCall, createProject, signInAsAdmin, unique } from "./support";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const HEADER = "file,class,confidence,x,y,w,h,x_px,y_px,w_px,h_px";
const CLASSES = ["square", "circle", "triangle"]; // server/demo/shapes.py, what train_tiny learns

// The checkpoint generators of tests/test_checkpoint_safety.py and gen_allowlist.py
// (nothing binary is committed): an os.system pickle, a 2-epoch yolo11n, and a few
// synthetic shape images to predict on.
const GENERATE = `
import shutil, sys
from pathlib import Path
from server.demo import shapes
from tests.test_checkpoint_safety import _os_system, _pickle, _torch_zip
from workers.ml.gen_allowlist import train_tiny
out = Path(sys.argv[1])
(out / "malicious.pt").write_bytes(_torch_zip(_pickle(_os_system(out / "pwned"))))
model = train_tiny(out / "work", on_model_save=lambda trainer: None)
shutil.copyfile(model.trainer.best, out / "tiny.pt")
for seed in range(3):
    (out / f"shape-{seed}.png").write_bytes(shapes.render(100 + seed)[0])
`;

let files = "";

test.beforeAll(() => {
  test.setTimeout(300_000);
  files = mkdtempSync(join(tmpdir(), "oculab-e2e-models-"));
  const python = process.env.OCULAB_PYTHON ?? join(root, ".venv", "bin", "python");
  execFileSync(python, ["-c", GENERATE, files], {
    cwd: root,
    env: { ...process.env, PYTHONPATH: root },
    stdio: "ignore",
    timeout: 280_000,
  });
});

test.afterAll(() => {
  if (files) rmSync(files, { recursive: true, force: true });
});

async function uploadWeights(page: Page, file: string, name: string): Promise<void> {
  await page.getByRole("button", { name: "Upload weights" }).click();
  const dialog = page.getByRole("dialog", { name: "Upload model weights" });
  await dialog.getByLabel("Weights file").setInputFiles(join(files, file));
  await dialog.getByLabel("Model name").fill(name);
  await dialog.getByRole("button", { name: "Upload", exact: true }).click();
}

async function uploadImages(page: Page, projectId: number, names: string[]): Promise<void> {
  const csrf = (await page.context().cookies()).find((c) => c.name === "oculab_csrf")?.value ?? "";
  const response = await page.request.post(`/api/projects/${projectId}/images`, {
    headers: { "X-CSRF-Token": csrf },
    multipart: Object.fromEntries(
      names.map((name, i) => [
        `file${i}`,
        { name, mimeType: "image/png", buffer: readFileSync(join(files, name)) },
      ]),
    ),
  });
  expect(response.status(), await response.text()).toBe(201);
}

function rowsOf(csv: string): string[][] {
  // Plain names here (no commas or quotes): splitting is enough.
  return csv
    .trimEnd()
    .split("\r\n")
    .map((line) => line.split(","));
}

test("a malicious checkpoint is refused and says why", async ({ page }) => {
  await signInAsAdmin(page);
  const project = await createProject(page, unique("Models-evil"), CLASSES);
  await page.goto(`/projects/${project.id}/models`);
  await expect(page.getByText("No models in this project yet.")).toBeVisible();
  await uploadWeights(page, "malicious.pt", "evil");
  const dialog = page.getByRole("dialog", { name: "Upload model weights" });
  await expect(dialog.getByRole("alert")).toContainText("Refused: the weights would run code when loaded");
  await expect(dialog.getByRole("alert")).toContainText("system");
  await screenshot(page, "models-refused");
  // Nothing was stored: the registry is still empty.
  const models = await apiCall<{ items: unknown[] }>(page, "GET", `/api/models?project_id=${project.id}`);
  expect(models.items).toEqual([]);
});

test("a genuine model: ready, promoted, auto-labels into the review queue, draws boxes and exports CSV", async ({
  page,
}) => {
  test.setTimeout(240_000);
  await signInAsAdmin(page);
  const project = await createProject(page, unique("Models"), CLASSES);
  const images = ["shape-0.png", "shape-1.png", "shape-2.png"];
  await uploadImages(page, project.id, images);

  // Upload, then the inspection job's outcome, live.
  await page.goto(`/projects/${project.id}/models`);
  await uploadWeights(page, "tiny.pt", "tiny-shapes");
  const dialog = page.getByRole("dialog", { name: "Upload model weights" });
  await expect(dialog.getByRole("status")).toContainText(
    "Ready: a detect model with 3 classes (square, circle, triangle).",
    { timeout: 90_000 },
  );
  await screenshot(page, "models-upload-ready");
  await dialog.getByRole("button", { name: "Close" }).click();
  const row = page.getByRole("row").filter({ has: page.getByRole("rowheader", { name: /tiny-shapes/ }) });
  await expect(row.getByText("Ready")).toBeVisible();

  // Promote, with a confirmation.
  await row.getByRole("button", { name: "Promote tiny-shapes" }).click();
  const confirm = page.getByRole("dialog", { name: "Promote tiny-shapes?" });
  await confirm.getByRole("button", { name: "Promote" }).click();
  await expect(row.getByText("Promoted")).toBeVisible();
  await expect(row.getByRole("button", { name: "Promote tiny-shapes" })).toHaveCount(0);
  await screenshot(page, "models-registry");

  // The model's page.
  await row.getByRole("link", { name: "tiny-shapes", exact: true }).click();
  await expect(page.getByRole("heading", { level: 1, name: "tiny-shapes" })).toBeVisible();
  await expect(page.getByRole("list", { name: "Classes" }).getByRole("listitem")).toHaveCount(3);
  await expect(page.getByText(/^[0-9a-f]{64}$/)).toBeVisible();
  await screenshot(page, "model-page");

  // Auto-label with the promoted model; its counts, then the review queue.
  await page.getByRole("link", { name: "Models", exact: true }).click();
  await page.getByRole("button", { name: "Auto-label" }).click();
  const autolabel = page.getByRole("dialog", { name: "Auto-label images" });
  await expect(autolabel.getByLabel("Model")).toHaveValue(/\d+/);
  await expect(autolabel.getByLabel("Model").locator("option:checked")).toHaveText("tiny-shapes (promoted)");
  await autolabel.getByLabel("Confidence threshold").fill("0.001");
  await autolabel.getByRole("button", { name: "Start auto-labeling" }).click();
  await expect(autolabel.getByRole("status")).toContainText("Labeled 3 images with", { timeout: 120_000 });
  await screenshot(page, "models-autolabel-done");
  await autolabel.getByRole("link", { name: "Open the review queue" }).click();
  await expect(page.getByRole("heading", { name: "Review predictions" })).toBeVisible();
  const queue = page.getByRole("list", { name: "Queue" });
  for (const name of images) await expect(queue.getByText(name)).toBeVisible();

  // The predict playground: boxes drawn, filtered here, downloaded as CSV.
  await page.goto(`/projects/${project.id}/predict`);
  await expect(page.getByLabel("Model").locator("option:checked")).toHaveText("tiny-shapes (promoted)");
  await page.getByLabel("Choose images").setInputFiles(images.slice(0, 2).map((name) => join(files, name)));
  await expect(page.getByText(/boxes? on 2 images/)).toBeVisible({ timeout: 60_000 });
  await page.getByRole("slider", { name: /Confidence threshold/ }).fill("0");
  let drawn = 0;
  for (const name of images.slice(0, 2)) {
    const figure = page.getByRole("figure", { name });
    const caption = await figure.locator(".box-count").innerText();
    const count = Number.parseInt(caption, 10);
    await expect(figure.locator("svg rect.pred-box")).toHaveCount(count);
    await expect(figure.locator(".pred-label")).toHaveCount(count);
    // The image itself is on the canvas (decoded from the local file).
    await expect
      .poll(() => figure.locator("canvas").evaluate((c) => (c as HTMLCanvasElement).width))
      .toBeGreaterThan(1);
    drawn += count;
  }
  expect(drawn).toBeGreaterThan(0);
  await expect(page.getByText(`${drawn} box${drawn === 1 ? "" : "es"} on 2 images`)).toBeVisible();
  const perClass = page.getByRole("table", { name: "Boxes per class" });
  const counted = await perClass.locator("tbody td").allInnerTexts();
  expect(counted.reduce((n, c) => n + Number(c), 0)).toBe(drawn);
  await screenshot(page, "predict-playground");

  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download CSV" }).click(),
  ]);
  const csv = readFileSync(await download.path(), "utf8");
  const rows = rowsOf(csv);
  expect(rows[0]?.join(",")).toBe(HEADER);
  expect(rows).toHaveLength(drawn + 1);
  for (const row of rows.slice(1)) {
    expect(images.slice(0, 2)).toContain(row[0]);
    expect(CLASSES).toContain(row[1]);
    expect(row).toHaveLength(11);
    expect(Number(row[2])).toBeGreaterThanOrEqual(0.001);
  }

  // A high threshold hides them all, without asking the server again.
  await page.getByRole("slider", { name: /Confidence threshold/ }).fill("1");
  await expect(page.locator("svg rect.pred-box")).toHaveCount(0);

  // The project's predicted boxes, the same columns, from the gallery's export menu.
  await page.goto(`/projects/${project.id}`);
  await page.getByRole("button", { name: "Export dataset" }).click();
  const exporter = page.getByRole("dialog", { name: "Export the dataset" });
  await exporter.getByLabel(/CSV of the boxes/).check();
  await exporter.getByLabel(/Only reviewed images/).uncheck();
  await exporter.getByRole("button", { name: "Start export" }).click();
  const link = exporter.getByRole("link", { name: /Download CSV/ });
  await expect(link).toBeVisible({ timeout: 60_000 });
  await screenshot(page, "export-csv");
  const exported = await page.request.get((await link.getAttribute("href")) ?? "");
  expect(exported.headers()["content-type"]).toBe("text/csv; charset=utf-8");
  const exportedRows = rowsOf(await exported.text());
  expect(exportedRows[0]?.join(",")).toBe(HEADER);
  expect(exportedRows.length).toBeGreaterThan(1);
  for (const row of exportedRows.slice(1)) expect(images).toContain(row[0]);
});
