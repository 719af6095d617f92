// The browser half of bench/ui_queue.py (run it through that script): opens the admin's
// GPU queue page with a thousand jobs queued and measures the time to the first rows
// and the main-thread CPU per live update. Prints one line of JSON.
//   node frontend/scripts/bench-queue.mjs '<json config>'
import { chromium } from "@playwright/test";

const cfg = JSON.parse(process.argv[2] ?? "{}");
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"];
const VIEWPORT = { width: 1920, height: 1080 };
const FIRST = "queue-first-rows";
const UPDATE = "queue-update";

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
};
const round = (v) => Math.round(v * 10) / 10;

async function newPage(browser) {
  const context = await browser.newContext({ baseURL: cfg.url, viewport: VIEWPORT });
  await context.addCookies(cfg.cookies.map((c) => ({ ...c, url: cfg.url })));
  const page = await context.newPage();
  await page.addInitScript(() => {
    window.__longTasks = [];
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
    }).observe({ type: "longtask", buffered: true });
  });
  return { context, page };
}

// Waits inside the page for a PerformanceObserver to see the marks: no polling. The
// default of waitForFunction polls on every animation frame, which keeps the page
// producing 60 frames a second and would be counted as the page's own work.
const untilMarks = (page, name, want, timeout) =>
  page.evaluate(
    ([n, w, t]) =>
      new Promise((resolve, reject) => {
        const done = () => performance.getEntriesByName(n).length >= w;
        if (done()) return resolve(true);
        const timer = setTimeout(() => reject(new Error(`fewer than ${w} ${n} marks`)), t);
        const observer = new PerformanceObserver(() => {
          if (!done()) return;
          observer.disconnect();
          clearTimeout(timer);
          resolve(true);
        });
        observer.observe({ type: "mark" });
      }),
    [name, want, timeout],
  );

// With cfg.trace: a Chrome trace of the measured updates (open it in DevTools'
// Performance panel) to see where the main thread goes: script, layout roots, paint.
const TRACE_CATEGORIES = [
  "devtools.timeline",
  "disabled-by-default-devtools.timeline",
  "disabled-by-default-devtools.timeline.frame",
  "v8",
];

const marks = (page, name) => page.evaluate((n) => performance.getEntriesByName(n).length, name);

async function firstRender(browser) {
  const { context, page } = await newPage(browser);
  await page.goto("/admin/queue");
  await page.waitForFunction((n) => performance.getEntriesByName(n).length > 0, FIRST, { timeout: 60_000 });
  const ms = await page.evaluate((n) => performance.getEntriesByName(n)[0].startTime, FIRST);
  await context.close();
  return ms;
}

async function metrics(cdp) {
  const { metrics: list } = await cdp.send("Performance.getMetrics");
  return Object.fromEntries(list.map((m) => [m.name, m.value]));
}

const browser = await chromium.launch({ executablePath: cfg.chromium, args: ARGS });
try {
  const firsts = [];
  for (let i = 0; i < cfg.repeats; i++) firsts.push(await firstRender(browser));

  const { context, page } = await newPage(browser);
  await page.goto("/admin/queue");
  await page.waitForFunction((n) => performance.getEntriesByName(n).length > 0, FIRST, { timeout: 60_000 });
  // Settle: the first views and the page's own start-up work are not "an update".
  await page.waitForFunction((n) => performance.getEntriesByName(n).length >= 2, UPDATE, { timeout: 30_000 });
  const feed = await page.getByRole("status").textContent();
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable", { timeDomain: "threadTicks" });
  const startCount = await marks(page, UPDATE);
  const longBefore = await page.evaluate(() => window.__longTasks.length);
  if (cfg.trace) await browser.startTracing(page, { path: cfg.trace, categories: TRACE_CATEGORIES });
  const before = await metrics(cdp);
  const started = Date.now();
  await untilMarks(page, UPDATE, startCount + cfg.updates, cfg.updates * 10_000);
  const after = await metrics(cdp);
  if (cfg.trace) await browser.stopTracing();
  const updates = (await marks(page, UPDATE)) - startCount;
  const longTasks = await page.evaluate((from) => window.__longTasks.slice(from), longBefore);
  const rows = await page.locator("[data-job-id]").count();
  await page.screenshot({ path: cfg.screenshot, fullPage: true });
  await context.close();
  console.log(
    JSON.stringify({
      first_render_ms: round(median(firsts)),
      first_render_all_ms: firsts.map(round),
      feed,
      updates,
      seconds: round((Date.now() - started) / 1000),
      task_ms_per_update: round(((after.TaskDuration - before.TaskDuration) * 1000) / updates),
      script_ms_per_update: round(((after.ScriptDuration - before.ScriptDuration) * 1000) / updates),
      layout_ms_per_update: round(((after.LayoutDuration - before.LayoutDuration) * 1000) / updates),
      style_ms_per_update: round(((after.RecalcStyleDuration - before.RecalcStyleDuration) * 1000) / updates),
      long_tasks: longTasks.length,
      longest_task_ms: longTasks.length ? round(Math.max(...longTasks)) : 0,
      rows_in_dom: rows,
    }),
  );
} finally {
  await browser.close();
}
