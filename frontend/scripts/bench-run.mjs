// The browser half of bench/ui_run.py (run it through that script): opens a finished
// training run's page and the runs overlay in the system's Chromium and measures the
// time from navigation (or, in the app, from the click on the run) to the page's
// "curves drawn" mark. Prints one line of JSON.
//   node frontend/scripts/bench-run.mjs '<json config>'
import { chromium } from "@playwright/test";
import { nextMark, reportMarks, traceOpen } from "./marks.mjs";

const cfg = JSON.parse(process.argv[2] ?? "{}");
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"];
const VIEWPORT = { width: 1600, height: 900 };

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
};
const round = (v) => Math.round(v * 10) / 10;

async function newContext(browser) {
  const context = await browser.newContext({ baseURL: cfg.url, viewport: VIEWPORT });
  await context.addCookies(cfg.cookies.map((c) => ({ ...c, url: cfg.url })));
  await reportMarks(context);
  return context;
}

/** Navigation start → the mark the page sets once uPlot has drawn everything. */
async function open(page, path, mark) {
  const drawn = nextMark(page, mark);
  await page.goto(path);
  return drawn;
}

async function measure(browser, path, mark, screenshot) {
  const cold = [];
  for (let i = 0; i < cfg.repeats; i++) {
    const context = await newContext(browser);
    cold.push(await open(await context.newPage(), path, mark));
    await context.close();
  }
  const context = await newContext(browser);
  const page = await context.newPage();
  await open(page, path, mark);
  const warm = [];
  for (let i = 0; i < cfg.repeats; i++) warm.push(await open(page, path, mark));
  await page.screenshot({ path: screenshot, fullPage: true });
  return { page, context, cold, warm };
}

const browser = await chromium.launch({ executablePath: cfg.chromium, headless: true, args: ARGS });
const out = {};
try {
  const runPath = `/projects/${cfg.projectId}/training/${cfg.jobIds[0]}`;
  const run = await measure(browser, runPath, "oculab:run-curves-drawn", `${cfg.screenshots}/bench-run-page.png`);
  // What was drawn: the epochs table's caption and the uPlot canvases.
  out.run_points = await run.page.evaluate(() => ({
    table: document.querySelector(".epochs caption")?.textContent,
    canvases: document.querySelectorAll(".chart canvas").length,
  }));
  await run.context.close();
  out.run_cold_ms = { median: round(median(run.cold)), all: run.cold.map(round) };
  if (cfg.trace) {
    // Where a cold open's main thread spends its time.
    await traceOpen(await newContext(browser), cfg.trace, (page) => open(page, runPath, "oculab:run-curves-drawn"));
  }
  // In the app: from the click on the run in the runs list to the curves drawn (the
  // app and the list already loaded, as when a user picks a run).
  const inApp = [];
  for (let i = 0; i < cfg.repeats; i++) {
    const context = await newContext(browser);
    const page = await context.newPage();
    await page.goto(`/projects/${cfg.projectId}/training`);
    const link = page.locator(`a[href="${runPath}"]`).first();
    await link.waitFor();
    const marked = nextMark(page, "oculab:run-curves-drawn");
    const clicked = await page.evaluate(() => performance.now());
    await link.click();
    inApp.push((await marked) - clicked);
    await context.close();
  }
  out.run_in_app_ms = { median: round(median(inApp)), all: inApp.map(round) };
  out.run_warm_ms = { median: round(median(run.warm)), all: run.warm.map(round) };

  const overlayPath = `/projects/${cfg.projectId}/training?compare=${cfg.jobIds.join(",")}&metric=map5095`;
  const overlay = await measure(browser, overlayPath, "oculab:overlay-drawn", `${cfg.screenshots}/bench-run-overlay.png`);
  await overlay.context.close();
  out.overlay_cold_ms = { median: round(median(overlay.cold)), all: overlay.cold.map(round) };
  out.overlay_warm_ms = { median: round(median(overlay.warm)), all: overlay.warm.map(round) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
