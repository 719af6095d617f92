// The page's performance marks, reported by the page itself through the console as they
// are set (an init script's PerformanceObserver). Waiting this way runs nothing in the
// page while it loads: evaluating there (waitForFunction, page.evaluate) first injects
// Playwright's utility script, 13-16 ms of the page's main thread on this machine, and
// waitForFunction's default polling asks for an animation frame every 16 ms; either
// would be counted as the page's own time.

/** Makes every page of `context` report its marks (call before opening pages). */
export async function reportMarks(context) {
  await context.addInitScript(() => {
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) console.debug(`oculab-mark ${entry.name} ${entry.startTime}`);
    }).observe({ type: "mark" });
  });
}

/** The start time of the next `name` mark `page` reports (start waiting before the
 * navigation or click that sets it). */
export function nextMark(page, name, timeout = 60_000) {
  return new Promise((resolve, reject) => {
    const prefix = `oculab-mark ${name} `;
    const listen = (message) => {
      const text = message.text();
      if (message.type() !== "debug" || !text.startsWith(prefix)) return;
      clearTimeout(timer);
      page.off("console", listen);
      resolve(Number(text.slice(prefix.length)));
    };
    const timer = setTimeout(() => {
      page.off("console", listen);
      reject(new Error(`no ${name} mark within ${timeout} ms`));
    }, timeout);
    page.on("console", listen);
  });
}

/** Records a Chrome trace (JSON at `path`, with the V8 sampling profiler) of `open(page)`
 * on a page of its own in `context`, which it closes: one more cold open, not counted. */
export async function traceOpen(context, path, open) {
  const page = await context.newPage();
  await context.browser().startTracing(page, {
    path,
    categories: ["devtools.timeline", "blink.user_timing", "v8.execute", "loading", "disabled-by-default-devtools.timeline", "disabled-by-default-v8.cpu_profiler"],
  });
  await open(page);
  await context.browser().stopTracing();
  await context.close();
}
