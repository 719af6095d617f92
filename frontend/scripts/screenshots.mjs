// The README's screenshots (docs/img/*.png), taken from a real `oculab standalone` whose
// demo has finished: sign-in, projects, the demo's gallery, the editor with predicted
// boxes, the review queue, the training run, the models, the jobs, the GPU queue and
// the settings page. Rerun it after a UI change:
//
//   OCULAB_DATA_DIR=/tmp/shots OCULAB_ADMIN_PASSWORD=<pw> .venv/bin/oculab standalone --port 8765 &
//   node frontend/scripts/screenshots.mjs --url http://127.0.0.1:8765 --password <pw> [--out docs/img]
//
// It waits (up to --wait seconds, default 600) for the demo's jobs to finish through the
// API, then drives the system's Chromium (CHROMIUM_PATH, default /usr/bin/chromium).
// Shrink the PNGs afterwards with `pngquant --force --ext .png docs/img/*.png` if present.
import { mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "@playwright/test";

const here = dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const url = args.url ?? "http://127.0.0.1:8000";
const password = args.password ?? process.env.OCULAB_ADMIN_PASSWORD;
const out = resolve(args.out ?? resolve(here, "..", "..", "docs", "img"));
const waitSeconds = Number(args.wait ?? 600);
if (!password) throw new Error("--password (or OCULAB_ADMIN_PASSWORD) is required");
mkdirSync(out, { recursive: true });

const log = (message) => process.stderr.write(`screenshots: ${message}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Every <img> on the page (and those in `selector`) has decoded real pixels. */
async function imagesLoaded(page, selector = "img") {
  await page.waitForFunction(
    (sel) => {
      const imgs = [...document.querySelectorAll(sel)];
      return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0);
    },
    selector,
    { timeout: 30_000 },
  );
}

// Pages full of the demo's noise images stay over 200 KB as PNG even quantised: JPEG.
async function shot(page, name, photo = false) {
  const path = `${out}/${name}.${photo ? "jpg" : "png"}`;
  await page.screenshot(photo ? { path, type: "jpeg", quality: 70 } : { path });
  log(`wrote ${path}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const context = await browser.newContext({ baseURL: url, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();

  // 1. Sign-in: what the printed URL opens.
  await page.goto("/");
  await page.waitForURL(/\/signin/);
  await page.getByLabel("Username").fill("admin");
  await shot(page, "signin");
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL(/\/projects$/);

  // The demo: import, train, promote, auto-label. Wait for every job to end.
  const deadline = Date.now() + waitSeconds * 1000;
  let projectId = null;
  for (;;) {
    const projects = await (await page.request.get("/api/projects")).json();
    const demo = (projects.items ?? projects).find((p) => p.name === "Demo: shapes");
    projectId = demo?.id ?? null;
    const jobs = await (await page.request.get("/api/jobs?limit=100")).json();
    const list = jobs.items ?? jobs;
    const open = list.filter((j) => !["succeeded", "failed", "canceled"].includes(j.state));
    const labeled = list.some((j) => String(j.kind).startsWith("autolabel") && j.state === "succeeded");
    if (projectId !== null && labeled && open.length === 0) break;
    if (Date.now() > deadline) throw new Error(`the demo did not finish within ${waitSeconds} s`);
    log(`waiting for the demo: ${list.length} jobs, ${open.length} not finished`);
    await sleep(5000);
  }

  // 2. Projects, with the demo's counts.
  await page.goto("/projects");
  await page.getByRole("link", { name: "Demo: shapes" }).first().waitFor();
  await shot(page, "projects");

  // 3. The demo's gallery, thumbnails loaded.
  await page.goto(`/projects/${projectId}`);
  await page.getByText(/images loaded/).waitFor();
  await imagesLoaded(page, ".grid-scroller img");
  await shot(page, "gallery", true);

  // 4. The review queue, on its first predicted image.
  await page.goto(`/projects/${projectId}/review`);
  await page.getByRole("button", { name: /Accept and next/ }).waitFor();
  await sleep(1000); // the preview's image and boxes
  await imagesLoaded(page, ".review img, .review canvas").catch(() => {});
  await shot(page, "review", true);

  // 5. The editor on that image with its predicted boxes ("Fix in editor", E).
  await page.keyboard.press("e");
  await page.waitForURL(/\/images\/\d+$/);
  await page.waitForFunction(() => performance.getEntriesByName("oculab:editor-full-resolution").length > 0, null, {
    timeout: 30_000,
  });
  await sleep(500);
  await shot(page, "editor", true);

  // 6. The demo's training run: its curves, drawn from the stored per-epoch metrics.
  const runs = await (await page.request.get(`/api/jobs?project_id=${projectId}&kind=training.train&limit=1`)).json();
  const run = (runs.items ?? runs)[0];
  if (run) {
    await page.goto(`/projects/${projectId}/training/${run.id}`);
    await page.waitForFunction(() => document.querySelectorAll(".chart canvas").length >= 3, null, { timeout: 30_000 });
    await sleep(500);
    await shot(page, "training-run");
  }

  // The runs list with the Train dialog open (its counts of reviewed images and boxes),
  // and the run's job page with its log.
  await page.goto(`/projects/${projectId}/training`);
  await page.getByRole("button", { name: "Train a model" }).click();
  await page.getByRole("table", { name: "Boxes per class" }).waitFor();
  await shot(page, "train-dialog");
  if (run) {
    await page.goto(`/jobs/${run.id}`);
    await page.getByLabel("Job details").waitFor();
    await sleep(500);
    await shot(page, "job");
  }

  // 7. The model registry with the demo's promoted model, and the model's page.
  await page.goto(`/projects/${projectId}/models`);
  await page.getByText("Promoted", { exact: true }).first().waitFor();
  await shot(page, "models");
  const models = await (await page.request.get(`/api/models?project_id=${projectId}`)).json();
  const model = (models.items ?? models).find((m) => m.promoted);
  if (model) {
    await page.goto(`/projects/${projectId}/models/${model.id}`);
    await page.getByRole("heading", { level: 1, name: model.name }).waitFor();
    await shot(page, "model");
  }

  // The predict playground on three of the demo's images (downloaded to files first:
  // the playground takes files from the user's disk).
  const images = await (await page.request.get(`/api/projects/${projectId}/images?limit=3`)).json();
  const files = [];
  for (const image of images.items) {
    const body = await (await page.request.get(`/api/images/${image.id}/file`)).body();
    const path = join(tmpdir(), `oculab-shot-${image.id}-${image.filename ?? "image.png"}`.replace(/[^\w.-]/g, "_"));
    writeFileSync(path, body);
    files.push(path);
  }
  await page.goto(`/projects/${projectId}/predict`);
  await page.getByLabel("Choose images").setInputFiles(files);
  await page.getByText(/boxes? on \d+ images?/).waitFor({ timeout: 60_000 });
  await sleep(500);
  await shot(page, "predict", true);

  // 8. The jobs the demo ran.
  await page.goto("/jobs");
  await page.getByRole("table").first().waitFor();
  await shot(page, "jobs");

  // 9. The admin's GPU queue (idle now: the demo is done) and 10. personal API tokens.
  await page.goto("/admin/queue");
  await page.getByRole("heading", { name: "Workers" }).waitFor();
  await sleep(2500); // a second sample for the sparklines
  await shot(page, "gpu-queue");
  await page.goto("/admin/users");
  await page.getByRole("table", { name: "Users" }).waitFor();
  await shot(page, "users");
  await page.goto("/admin/audit");
  await page.getByRole("table", { name: "Audit events" }).waitFor();
  await shot(page, "audit");
  await page.goto("/settings");
  await page.getByRole("heading", { level: 1 }).waitFor();
  await shot(page, "settings");
} finally {
  await browser.close();
}
