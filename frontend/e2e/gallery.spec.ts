import { readFileSync } from "node:fs";
import { expect, png, screenshot, test } from "./fixtures";
import { createProject, signInAsAdmin, unique, writeFolder, zip, zipNames } from "./support";

test("upload a folder and dropped files: per-file results, a rejected non-image, retry of a failed batch", async ({
  page,
}) => {
  await signInAsAdmin(page);
  const project = await createProject(page, unique("Uploads"));
  await page.goto(`/projects/${project.id}`);
  await expect(page.getByText("No images in this project yet.")).toBeVisible();

  const folder = writeFolder("street", {
    "day/0001.png": png(1),
    "day/0002.png": png(2),
    "night/0003.png": png(3),
    "notes.txt": "not an image",
    ".DS_Store": "junk",
  });
  await page.getByLabel("Upload folder").setInputFiles(folder);
  const uploads = page.getByRole("region", { name: "Uploads" });
  await expect(uploads.getByRole("heading", { name: "Upload finished" })).toBeVisible();
  await expect(uploads.getByText("4 of 4 files done: 3 created · 0 duplicates · 1 rejected · 0 failed")).toBeVisible();
  await expect(uploads.getByText("1 hidden or system file left out.")).toBeVisible();
  const files = uploads.getByRole("list", { name: "Files" });
  await expect(files.getByRole("listitem").filter({ hasText: "street/day/0001.png" })).toContainText("Created");
  await expect(files.getByRole("listitem").filter({ hasText: "street/notes.txt" })).toContainText(
    "Rejected: not a recognised image (allowed: JPEG, PNG, WebP, BMP, TIFF)",
  );
  await expect(page.getByRole("radio", { name: "All (3)" })).toBeChecked();
  const grid = page.getByRole("region", { name: "Images" });
  await expect(grid.getByRole("link", { name: "0001.png, unlabeled" })).toHaveAttribute(
    "href",
    /\/projects\/\d+\/images\/\d+$/,
  );
  // The new images' thumbnails load without a reload (decoded pixels, not grey boxes).
  await expect
    .poll(() =>
      grid.locator("img").evaluateAll((imgs) =>
        imgs.map((img) => (img as HTMLImageElement).complete && (img as HTMLImageElement).naturalWidth > 0),
      ),
    )
    .toEqual([true, true, true]);
  await screenshot(page, "gallery-upload-folder");

  // A drop (synthetic: a real OS drag cannot be scripted) of a known and a new file.
  const dataTransfer = await page.evaluateHandle(
    ({ known, fresh }) => {
      const transfer = new DataTransfer();
      const bytes = (b64: string) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      transfer.items.add(new File([bytes(known)], "again-0001.png", { type: "image/png" }));
      transfer.items.add(new File([bytes(fresh)], "dropped.png", { type: "image/png" }));
      return transfer;
    },
    { known: png(1).toString("base64"), fresh: png(4).toString("base64") },
  );
  await grid.dispatchEvent("dragenter", { dataTransfer });
  await expect(page.getByText(/Drop images or folders to upload them to/)).toBeVisible();
  await grid.dispatchEvent("dragover", { dataTransfer });
  await grid.dispatchEvent("drop", { dataTransfer });
  await expect(uploads.getByText("6 of 6 files done: 4 created · 1 duplicate · 1 rejected · 0 failed")).toBeVisible();
  await expect(files.getByRole("listitem").filter({ hasText: "again-0001.png" })).toContainText(
    "Duplicate: already in the project",
  );
  await expect(page.getByRole("radio", { name: "All (4)" })).toBeChecked();

  // 25 files into the train split make five batches of 5; the first request to arrive
  // fails (the network drops it), the others go through; "Retry failed" sends the rest.
  await uploads.getByRole("button", { name: "Close" }).click();
  await page.getByLabel("into split").selectOption("train");
  let dropped = false;
  await page.route(/\/api\/projects\/\d+\/images\?split=train$/, async (route) => {
    if (!dropped) {
      dropped = true;
      await route.abort("connectionreset");
    } else {
      await route.continue();
    }
  });
  await page.getByLabel("Upload files").setInputFiles(
    Array.from({ length: 25 }, (_, i) => ({ name: `batch_${i}.png`, mimeType: "image/png", buffer: png(100 + i) })),
  );
  const retry = uploads.getByRole("button", { name: /^Retry failed \((20|5) files\)$/ });
  await expect(retry).toBeVisible();
  await expect(uploads.getByRole("list", { name: "Failed batches" })).toContainText("Cannot reach the server");
  await expect(uploads.getByRole("heading", { name: "Upload finished" })).toBeVisible();
  await screenshot(page, "gallery-upload-failed-batch");
  await retry.click();
  await expect(uploads.getByText("25 of 25 files done: 25 created · 0 duplicates · 0 rejected · 0 failed")).toBeVisible();
  await expect(retry).toBeHidden();
  await page.getByRole("radio", { name: /^Train \(25\)$/ }).check();
  await expect(page).toHaveURL(/split=train/);
  await expect(page.getByText("25 of 25 images loaded")).toBeVisible();
  await expect(page.getByRole("radio", { name: "All (25)" })).toBeChecked();
  await screenshot(page, "gallery-upload-retried");
});

test("a batch the server finds too large for one request is split and sent again", async ({ page }) => {
  await signInAsAdmin(page);
  const project = await createProject(page, unique("Split"));
  await page.goto(`/projects/${project.id}`);
  // The first request to arrive (of three batches: 5, 5 and 2 files) is answered as the
  // server answers a body over OCULAB_MAX_REQUEST_BYTES; its halves go through.
  let refused = 0;
  await page.route(/\/api\/projects\/\d+\/images$/, async (route) => {
    if (refused === 0) {
      refused += 1;
      await route.fulfill({ status: 413, json: { detail: "request body too large (limit 1000 bytes)" } });
    } else {
      await route.continue();
    }
  });
  await page.getByLabel("Upload files").setInputFiles(
    Array.from({ length: 12 }, (_, i) => ({ name: `split_${i}.png`, mimeType: "image/png", buffer: png(300 + i) })),
  );
  const uploads = page.getByRole("region", { name: "Uploads" });
  await expect(uploads.getByText("12 of 12 files done: 12 created · 0 duplicates · 0 rejected · 0 failed")).toBeVisible();
  await expect(uploads.getByRole("button", { name: /^Retry failed/ })).toBeHidden();
  expect(refused).toBe(1);
  await expect(page.getByRole("radio", { name: "All (12)" })).toBeChecked();
});

test("import a YOLO zip: the job's counts and per-line issues; then export and download", async ({
  page,
}) => {
  await signInAsAdmin(page);
  const project = await createProject(page, unique("Import"), ["shape"]);
  await page.goto(`/projects/${project.id}`);

  // A bad zip first: the API's reason is shown, nothing is created.
  await page.getByRole("button", { name: "Import dataset" }).click();
  const dialog = page.getByRole("dialog", { name: "Import a dataset" });
  await dialog.getByLabel("Dataset zip").setInputFiles({ name: "broken.zip", mimeType: "application/zip", buffer: Buffer.from("no zip here") });
  await dialog.getByRole("button", { name: "Start import" }).click();
  await expect(dialog.getByRole("alert")).toContainText("The import was refused:");

  const dataset = zip({
    "data.yaml": "names: [shape, circle]\n",
    "images/train/a.png": png(11),
    "labels/train/a.txt": "0 0.5 0.5 0.25 0.25\n",
    "images/train/b.png": png(12),
    "labels/train/b.txt": "1 0.4 0.4 0.2 0.2\n7 0.5 0.5 0.2 0.2\n",
    "images/val/c.png": png(13),
  });
  await dialog.getByLabel("Dataset zip").setInputFiles({ name: "shapes-yolo.zip", mimeType: "application/zip", buffer: dataset });
  await dialog.getByRole("button", { name: "Start import" }).click();
  await expect(dialog.getByText(/^Job \d+: Done$/)).toBeVisible({ timeout: 30_000 });
  const counts = dialog.getByLabel("Import counts");
  const count = (label: string) => counts.locator("div").filter({ hasText: label }).getByRole("definition");
  await expect(count("Images added")).toHaveText("3");
  await expect(count("Images with labels")).toHaveText("2");
  await expect(count("Boxes imported")).toHaveText("2");
  await expect(count("Label lines skipped")).toHaveText("1");
  await expect(dialog.getByText("New classes added to the project: circle")).toBeVisible();
  const issues = dialog.getByRole("table", { name: "Import issues" });
  const issue = issues.getByRole("row").filter({ hasText: "labels/train/b.txt" });
  await expect(issue.getByRole("cell").nth(1)).toHaveText("2");
  await screenshot(page, "gallery-import-done");
  await dialog.getByRole("button", { name: "Close" }).click();
  await expect(page.getByRole("radio", { name: "Reviewed (2)" })).toBeVisible();
  await expect(page.getByRole("radio", { name: "Val (1)" })).toBeVisible();

  await page.getByRole("button", { name: "Export dataset" }).click();
  const exporter = page.getByRole("dialog", { name: "Export the dataset" });
  await expect(exporter.getByRole("radio", { name: /YOLO/ })).toBeChecked();
  await expect(exporter.getByRole("checkbox", { name: /Only reviewed images/ })).toBeChecked();
  await exporter.getByRole("button", { name: "Start export" }).click();
  const download = exporter.getByRole("link", { name: /^Download zip/ });
  await expect(download).toBeVisible({ timeout: 30_000 });
  await expect(exporter).toContainText("2 images and 2 boxes in YOLO");
  await screenshot(page, "gallery-export-done");
  const [file] = await Promise.all([page.waitForEvent("download"), download.click()]);
  expect(file.suggestedFilename()).toMatch(/\.zip$/);
  const names = zipNames(readFileSync(await file.path()));
  expect(names).toContain("data.yaml");
  expect(names.filter((n) => n.startsWith("images/")).sort()).toEqual(["images/train/a.png", "images/train/b.png"]);
});
