// Training from the UI against a real `oculab standalone`: the Train dialog counts the
// reviewed images and boxes per class, refuses a project with none, and a 2-epoch run on
// tiny images (in the GPU pool, whose one slot is the CPU on the e2e server) shows both
// epochs.
import { expect, screenshot, test } from "./fixtures";
import { call, seedProject, session, useSession } from "./editor-support";

const CLASSES = ["square", "circle"];

test("a 2-epoch training run from the Train dialog shows both epochs", async ({ page, browser, baseURL }) => {
  test.setTimeout(240_000);
  await useSession(page, await session(browser, baseURL!));
  const seeded = await seedProject(page.request, { classes: CLASSES, count: 20, width: 64, height: 64, prefix: "Training" });
  // Reviewed: a person saved the first 16 images' boxes (two squares and a circle on
  // most); the last 4 stay unlabeled for the trained model to label.
  const unlabeled = seeded.imageIds.slice(16);
  let squares = 0;
  let circles = 0;
  for (const [i, imageId] of seeded.imageIds.slice(0, 16).entries()) {
    const boxes = [{ class_id: 0, x: 0.1, y: 0.1, w: 0.3, h: 0.3 }];
    if (i % 2 === 0) boxes.push({ class_id: 0, x: 0.6, y: 0.1, w: 0.3, h: 0.3 });
    if (i % 4 !== 3) boxes.push({ class_id: 1, x: 0.3, y: 0.55, w: 0.4, h: 0.4 });
    squares += boxes.filter((b) => b.class_id === 0).length;
    circles += boxes.filter((b) => b.class_id === 1).length;
    await call(page.request, "PUT", `/api/images/${imageId}/annotations`, { base_revision: 0, boxes });
  }

  await page.goto(`/projects/${seeded.projectId}/training`);
  await expect(page.getByRole("heading", { name: "Training runs" })).toBeVisible();
  await expect(page.getByText("No training runs yet.")).toBeVisible();
  await page.getByRole("button", { name: "Train a model" }).click();
  const dialog = page.getByRole("dialog", { name: "Train a model" });
  // The validation draw hashes each image's bytes, which are random per run: it may
  // take none of the 16 (0.8^16, about 3%), and the dialog then says so.
  await expect(
    dialog.getByText(/16 reviewed images: \d+ for training, \d+ for validation( \(none: it validates on the training images\))?; 36 boxes/),
  ).toBeVisible();
  const perClass = dialog.getByRole("table", { name: "Boxes per class" });
  await expect(perClass.getByRole("row", { name: `square ${squares} 16` })).toBeVisible();
  await expect(perClass.getByRole("row", { name: `circle ${circles} 12` })).toBeVisible();
  await dialog.getByRole("combobox", { name: "Start from" }).selectOption("yolo11n.yaml");
  await dialog.getByRole("spinbutton", { name: "Epochs" }).fill("2");
  await dialog.getByRole("spinbutton", { name: "Image size (px)" }).fill("64");
  await dialog.getByRole("spinbutton", { name: "Batch" }).fill("8");
  await dialog.getByRole("spinbutton", { name: "Validation fraction" }).fill("0.25");
  // The e2e server gives the GPU pool one slot (OCULAB_STANDALONE_GPU_SLOTS=1).
  await expect(dialog.getByRole("combobox", { name: "Pool" })).toHaveValue("gpu");
  await expect(dialog.getByRole("option", { name: "gpu (GPU, 1 worker slot)" })).toBeAttached();
  await expect(dialog.getByText(/No worker serves/)).toHaveCount(0);
  await screenshot(page, "training-dialog");
  await dialog.getByRole("button", { name: "Start training" }).click();

  await expect(page).toHaveURL(new RegExp(`/projects/${seeded.projectId}/training/\\d+$`));
  const jobId = Number(page.url().split("/").pop());
  await expect(page.getByRole("heading", { name: `Run #${jobId}` })).toBeVisible();
  // Epoch 1 arrives through the event stream while the run goes on, then epoch 2.
  const epochs = page.getByRole("table", { name: "Every epoch" });
  await expect(epochs.getByRole("rowheader", { name: "1", exact: true })).toBeVisible({ timeout: 180_000 });
  await expect(epochs.getByRole("rowheader", { name: "2", exact: true })).toBeVisible({ timeout: 120_000 });
  await expect(page.getByRole("figure", { name: "mAP" })).toHaveAccessibleDescription(/^2 epochs\. At epoch 2: /);
  await expect(page.getByRole("figure", { name: "Losses" })).toHaveAccessibleDescription(/Train box loss \d/);
  // uPlot drew: one canvas per chart.
  await expect(page.locator(".chart canvas")).toHaveCount(3);
  await expect(page.locator(".state")).toHaveText("succeeded", { timeout: 120_000 });
  const model = page.getByRole("link", { name: /^Registered model #\d+$/ });
  await expect(model).toBeVisible();
  await expect(page.getByRole("link", { name: "Job page and log" })).toHaveAttribute("href", `/jobs/${jobId}`);
  await screenshot(page, "training-run");

  // The runs list: the finished run with its epochs and model; the overlay draws it.
  await page.getByRole("link", { name: "Training", exact: true }).click();
  const row = page.getByRole("row", { name: new RegExp(`Run #${jobId}`) });
  await expect(row.getByRole("cell", { name: "2 / 2" })).toBeVisible();
  await expect(row.getByRole("link", { name: /^Model #\d+$/ })).toBeVisible();
  // The page may select the newest finished run for the overlay while the runs load:
  // check until the box stays checked.
  const compare = row.getByRole("checkbox", { name: `Compare Run #${jobId}` });
  await expect(async () => {
    await compare.check();
    await expect(compare).toBeChecked();
  }).toPass();
  await page.getByRole("combobox", { name: "Metric" }).selectOption("Train box loss");
  await expect(page.getByRole("figure", { name: "Train box loss of one run" })).toBeVisible();
  await expect(page.locator(".overlay canvas")).toHaveCount(1);
  await screenshot(page, "training-runs");

  // The trained model in the registry: promote it, auto-label the unlabeled images with
  // it and find them in the review queue.
  await row.getByRole("link", { name: /^Model #\d+$/ }).click();
  await expect(page).toHaveURL(new RegExp(`/projects/${seeded.projectId}/models/\\d+$`));
  const modelId = Number(page.url().split("/").pop());
  const { name: modelName } = await call<{ name: string }>(page.request, "GET", `/api/models/${modelId}`);
  await expect(page.getByRole("heading", { level: 1, name: modelName })).toBeVisible();
  await page.getByRole("button", { name: `Promote ${modelName}` }).click();
  await page.getByRole("dialog", { name: `Promote ${modelName}?` }).getByRole("button", { name: "Promote" }).click();
  await expect(page.getByText("Promoted", { exact: true })).toBeVisible();
  await page.getByRole("link", { name: "Models", exact: true }).click();
  await page.getByRole("button", { name: "Auto-label" }).click();
  const autolabel = page.getByRole("dialog", { name: "Auto-label images" });
  await expect(autolabel.getByLabel("Model").locator("option:checked")).toHaveText(`${modelName} (promoted)`);
  // Two epochs on 16 tiny images: the model is unsure of everything.
  await autolabel.getByLabel("Confidence threshold").fill("0.001");
  await autolabel.getByRole("button", { name: "Start auto-labeling" }).click();
  await expect(autolabel.getByRole("status")).toContainText(/Labeled [1-4] images? with/, { timeout: 120_000 });
  await autolabel.getByRole("link", { name: "Open the review queue" }).click();
  await expect(page.getByRole("heading", { name: "Review predictions" })).toBeVisible();
  const queue = page.getByRole("list", { name: "Queue" });
  await expect(queue.getByRole("listitem").first()).toBeVisible();
  const listed = await queue.getByRole("listitem").count();
  expect(listed).toBeGreaterThan(0);
  expect(listed).toBeLessThanOrEqual(unlabeled.length);
  await screenshot(page, "training-model-autolabeled");
});

test("the Train dialog refuses a project without reviewed images", async ({ page, browser, baseURL }) => {
  await useSession(page, await session(browser, baseURL!));
  const seeded = await seedProject(page.request, { classes: CLASSES, count: 1, width: 64, height: 64, prefix: "Untrained" });
  await page.goto(`/projects/${seeded.projectId}/training`);
  await page.getByRole("button", { name: "Train a model" }).click();
  const dialog = page.getByRole("dialog", { name: "Train a model" });
  await expect(dialog.getByRole("alert")).toHaveText(
    "Cannot train: training needs at least 2 reviewed images; this project has 0.",
  );
  await expect(dialog.getByRole("button", { name: "Start training" })).toBeDisabled();
  await screenshot(page, "training-refused");
});
