// The browser half of bench/ui.py (run it through that script): opens the editor on
// images with many boxes in the system's Chromium and measures open-to-first-paint and
// frame times while a box is dragged. Prints one line of JSON.
//   node frontend/scripts/bench-ui.mjs '<json config>'
import { chromium } from "@playwright/test";
import { nextMark, reportMarks, traceOpen } from "./marks.mjs";

const cfg = JSON.parse(process.argv[2] ?? "{}");
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"];
const VIEWPORT = { width: 1600, height: 900 };
const READY = "oculab:editor-ready";

const pct = (values, p) => {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
};
const median = (values) => pct(values, 50);
const round = (v) => (v === null ? null : Math.round(v * 10) / 10);

async function newContext(browser) {
  const context = await browser.newContext({ baseURL: cfg.url, viewport: VIEWPORT });
  await context.addCookies(cfg.cookies.map((c) => ({ ...c, url: cfg.url })));
  // Main-thread tasks over 50 ms, from the first script on (not buffered by default).
  await context.addInitScript(() => {
    window.__longTasks = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__longTasks.push([e.startTime, e.duration]);
    }).observe({ type: "longtask" });
  });
  await reportMarks(context);
  return context;
}

/** The server's own time per route (to the response headers), from its /metrics. */
async function serverTimes() {
  const text = await (await fetch(`${cfg.url}/metrics`)).text();
  const out = {};
  for (const line of text.split("\n")) {
    const m = /^oculab_http_request_duration_seconds_(sum|count)\{method="(\w+)",route="([^"]+)"\} ([\d.e+-]+)$/.exec(line);
    if (!m) continue;
    const key = `${m[2]} ${m[3]}`;
    out[key] ??= { sum: 0, count: 0 };
    out[key][m[1]] = Number(m[4]);
  }
  return out;
}

function serverDelta(before, after) {
  const rows = {};
  for (const [key, now] of Object.entries(after)) {
    const count = now.count - (before[key]?.count ?? 0);
    if (count <= 0 || key.includes("/metrics")) continue;
    const ms = (now.sum - (before[key]?.sum ?? 0)) * 1000;
    rows[key] = { requests: count, mean_ms: round(ms / count) };
  }
  return rows;
}

/**
 * What an opening cost until its first frame, in counts that do not depend on the
 * machine's load: requests started, bytes, long tasks; and the phases (ms from the
 * navigation start): route matched (data requests out), editor code evaluated, data
 * in (the editor mounts), first frame.
 */
function openingCounts(page) {
  return page.evaluate((ready) => {
    const at = performance.getEntriesByName(ready)[0].startTime;
    const mark = (n) => performance.getEntriesByName(n).at(-1)?.startTime ?? null;
    const before = performance.getEntriesByType("resource").filter((e) => e.startTime < at);
    const long = (window.__longTasks ?? []).filter(([start]) => start < at);
    return {
      requests: before.length + 1, // and the document
      api_requests: before.filter((e) => new URL(e.name).pathname.startsWith("/api/")).length,
      script_requests: before.filter((e) => e.initiatorType === "script" || /\.js$/.test(e.name)).length,
      kb_transferred: Math.round(before.reduce((n, e) => n + e.transferSize, 0) / 1024),
      long_tasks: long.length,
      long_task_ms: Math.round(long.reduce((n, [, d]) => n + d, 0)),
      phases: {
        route: mark("oculab:editor-route"),
        code: mark("oculab:editor-code"),
        data: mark("oculab:editor-data"),
        ready: at,
      },
    };
  }, READY);
}

const editorUrl = (imageId) => `/projects/${cfg.projectId}/images/${imageId}`;

const FULL = "oculab:editor-full-resolution";
// The Konva stage has drawn: the editor takes the mouse (on a first open, the first
// frame is painted before the canvas library has loaded).
const INTERACTIVE = "oculab:editor-interactive";
/**
 * Navigation start → the editor's first frame with every box on the image (its preview
 * while the full file decodes), → the frame with the full resolution, and → the stage
 * taking input.
 */
async function openOnce(page, imageId) {
  // Reported by the page (marks.mjs): nothing is evaluated in it while it opens.
  const marks = Promise.all([READY, FULL, INTERACTIVE].map((name) => nextMark(page, name)));
  await page.goto(editorUrl(imageId));
  const [first, full, interactive] = await marks;
  return { first, full, interactive };
}

/** A click on "Next image" → the next image's first frame and full-resolution frame. */
async function openInApp(page) {
  await page.waitForFunction(() =>
    [...document.querySelectorAll("button")].some((b) => b.getAttribute("aria-label") === "Next image" && !b.disabled),
  );
  const names = [READY, FULL, INTERACTIVE];
  const before = await page.evaluate((all) => all.map((n) => performance.getEntriesByName(n).length), names);
  await page.evaluate(() => {
    const button = [...document.querySelectorAll("button")].find((b) => b.getAttribute("aria-label") === "Next image");
    window.__clickAt = performance.now();
    button.click();
  });
  await page.waitForFunction(
    ([names, counts]) => names.every((n, i) => performance.getEntriesByName(n).length > counts[i]),
    [names, before],
    { timeout: 60_000 },
  );
  return page.evaluate(
    ([ready, full, interactive]) => {
      const last = (n) => performance.getEntriesByName(n).at(-1).startTime - window.__clickAt;
      return { first: last(ready), full: last(full), interactive: last(interactive) };
    },
    names,
  );
}

/** Each request's start, first byte and end, the marks (ms from navigation start). */
function timeline(page) {
  return page.evaluate(() => [
    ...performance
      .getEntriesByType("resource")
      .filter((e) => /\/api\/|\/assets\//.test(e.name))
      // start, first byte, end
      .map((e) => `${new URL(e.name).pathname} ${[e.startTime, e.responseStart, e.responseEnd].map(Math.round).join("-")}`),
    ...performance.getEntriesByType("mark").map((m) => `${m.name} ${Math.round(m.startTime)}`),
  ]);
}

async function screenPoint(page, x, y) {
  const box = await page.getByRole("application", { name: "Image canvas" }).boundingBox();
  const margin = 16;
  const scale = Math.min((box.width - 2 * margin) / cfg.width, (box.height - 2 * margin) / cfg.height);
  return {
    x: box.x + (box.width - cfg.width * scale) / 2 + x * scale,
    y: box.y + (box.height - cfg.height * scale) / 2 + y * scale,
  };
}

/**
 * Drags one box for `ms`: the mouse goes down on it for real, then the page moves it
 * twice per animation frame (a 120 Hz mouse) while recording the deltas between frames.
 */
async function dragFrames(page, ms) {
  const b = cfg.dragBox;
  const start = await screenPoint(page, (b.x + b.w / 2) * cfg.width, (b.y + b.h / 2) * cfg.height);
  await page.mouse.click(start.x, start.y); // select it
  await page.waitForTimeout(300);
  await page.mouse.move(start.x, start.y);
  await page.mouse.down();
  await page.mouse.move(start.x + 5, start.y + 5, { steps: 2 });
  const frames = await page.evaluate(
    ([x0, y0, duration]) =>
      new Promise((done) => {
        const deltas = [];
        let last;
        let i = 0;
        const t0 = performance.now();
        const move = () => {
          i += 1;
          const a = i / 30;
          const event = { clientX: x0 + 150 * Math.sin(a), clientY: y0 + 100 * Math.sin(a * 0.7), bubbles: true, buttons: 1 };
          window.dispatchEvent(new MouseEvent("mousemove", event));
        };
        const tick = (t) => {
          if (last !== undefined) deltas.push(t - last);
          last = t;
          move();
          setTimeout(move, 8);
          if (t - t0 < duration) requestAnimationFrame(tick);
          else done(deltas);
        };
        requestAnimationFrame(tick);
      }),
    [start.x + 5, start.y + 5, ms],
  );
  await page.mouse.up();
  return { frames, moves: frames.length * 2 };
}

const browser = await chromium.launch({ executablePath: cfg.chromium, headless: true, args: ARGS });
const out = {};
try {
  // Cold: a new browser context (empty HTTP cache), the editor's address typed in.
  const cold = [];
  const coldCounts = [];
  const serverBefore = await serverTimes();
  for (let i = 0; i < cfg.repeats; i++) {
    const context = await newContext(browser);
    const page = await context.newPage();
    cold.push(await openOnce(page, cfg.imageIds[0]));
    coldCounts.push(await openingCounts(page));
    out.open_cold_timeline = await timeline(page);
    await context.close();
  }
  out.open_cold_server = serverDelta(serverBefore, await serverTimes());
  if (cfg.trace) {
    // Where a cold open's main thread spends its time.
    await traceOpen(await newContext(browser), cfg.trace, (page) => openOnce(page, cfg.imageIds[0]));
  }
  const mid = (pick) => round(median(coldCounts.map(pick)));
  const spread = (values) => ({ median: round(median(values)), min: round(Math.min(...values)), max: round(Math.max(...values)) });
  out.open_cold_spread = spread(cold.map((r) => r.first));
  out.open_cold_counts = {
    requests: mid((c) => c.requests),
    api_requests: mid((c) => c.api_requests),
    script_requests: mid((c) => c.script_requests),
    kb_transferred: mid((c) => c.kb_transferred),
    long_tasks: mid((c) => c.long_tasks),
    long_task_ms: mid((c) => c.long_task_ms),
  };
  out.open_cold_phases_ms = {
    route: mid((c) => c.phases.route),
    code: mid((c) => c.phases.code),
    data: mid((c) => c.phases.data),
    ready: mid((c) => c.phases.ready),
  };
  // Warm: the same tab reloading (scripts and the image file come from the HTTP cache).
  const context = await newContext(browser);
  const page = await context.newPage();
  await openOnce(page, cfg.imageIds[0]);
  const warm = [];
  for (let i = 0; i < cfg.repeats; i++) warm.push(await openOnce(page, cfg.imageIds[0]));
  // Where the last warm open spent its time.
  out.open_warm_timeline = await timeline(page);
  // In the app: "Next image" between the two images of 500 boxes each.
  const inApp = [];
  for (let i = 0; i < cfg.repeats; i++) {
    await openOnce(page, cfg.imageIds[0]);
    inApp.push(await openInApp(page));
  }
  await openOnce(page, cfg.imageIds[0]);
  const boxes = await page.getByTestId("box-counts").textContent();
  const drags = [];
  let moves = 0;
  for (let i = 0; i < cfg.dragRuns; i++) {
    const run = await dragFrames(page, cfg.dragMs);
    drags.push(...run.frames);
    moves += run.moves;
    await page.keyboard.press("Control+z"); // back where it was
  }
  await page.screenshot({ path: cfg.screenshot });
  out.boxes_shown = boxes;
  const summary = (runs, key) => ({ median: round(median(runs.map((r) => r[key]))), all: runs.map((r) => round(r[key])) });
  out.open_cold_ms = summary(cold, "first");
  out.open_warm_ms = summary(warm, "first");
  out.open_in_app_ms = summary(inApp, "first");
  out.full_resolution_cold_ms = summary(cold, "full");
  out.full_resolution_warm_ms = summary(warm, "full");
  out.full_resolution_in_app_ms = summary(inApp, "full");
  out.interactive_cold_ms = summary(cold, "interactive");
  out.interactive_warm_ms = summary(warm, "interactive");
  out.interactive_in_app_ms = summary(inApp, "interactive");
  out.drag_frames = drags.length;
  out.drag_mouse_moves = moves;
  out.drag_frame_ms = {
    p50: round(median(drags)),
    p95: round(pct(drags, 95)),
    p99: round(pct(drags, 99)),
    max: round(Math.max(...drags)),
    over_20ms: drags.filter((d) => d > 20).length,
  };
  await context.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
