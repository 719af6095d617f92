// The browser half of bench/ui_upload.py (run by it; not on its own): Playwright from
// frontend/node_modules drives the system's Chromium against a running Oculab.
//
//   node bench/ui_upload_browser.mjs '<json options>'   → one JSON line on stdout
//
// Options: url, username, password, chromium, and any of
//   upload: {project, folder, files, mode}  upload a folder: "picker" or "drop"
//   gallery: {project, rows}           open a big project and scroll its grid to the end
import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(new URL("../frontend/package.json", import.meta.url));
const { chromium } = require("playwright");

const options = JSON.parse(process.argv[2] ?? "{}");

/** CPU seconds used so far by the processes this script started (Chromium's), from /proc. */
function browserCpuSeconds() {
  const parents = new Map();
  const cpu = new Map();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue;
    }
    // pid (comm) state ppid ... utime stime: fields 4, 14 and 15; comm may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    parents.set(Number(entry), Number(fields[1]));
    cpu.set(Number(entry), (Number(fields[11]) + Number(fields[12])) / 100);
  }
  let total = 0;
  for (const [pid, seconds] of cpu) {
    for (let up = parents.get(pid); up !== undefined && up > 1; up = parents.get(up)) {
      if (up === process.pid) {
        total += seconds;
        break;
      }
    }
  }
  return total;
}
const log = (message) => process.stderr.write(`[browser] ${message}\n`);

const browser = await chromium.launch({
  executablePath: options.chromium ?? "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const result = {};
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // The most <img> elements the page ever held at once (the gallery's DOM budget).
  await context.addInitScript(() => {
    window.__maxImgs = 0;
    const images = document.getElementsByTagName("img");
    new MutationObserver(() => {
      if (images.length > window.__maxImgs) window.__maxImgs = images.length;
    }).observe(document, { childList: true, subtree: true });
  });
  const page = await context.newPage();
  await page.goto(`${options.url}/signin`);
  await page.getByLabel("Username").fill(options.username);
  await page.getByLabel("Password").fill(options.password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL(/\/projects$/);

  if (options.upload) {
    // mode "picker": the folder picker (setInputFiles with the folder); the clock starts
    // at the input's change event. mode "drop": the files are first built in the page as
    // File objects (outside the clock), then dropped on the grid as one DataTransfer;
    // the clock starts at the drop. (A real OS drag cannot be scripted; its dropped
    // files, like these, come with their sizes, while picked ones cost Chromium a
    // file-system call each when sent.)
    const { project, folder, files, mode = "picker" } = options.upload;
    await page.goto(`${options.url}/projects/${project}`);
    const input = page.getByLabel("Upload folder");
    await input.waitFor({ state: "attached" });
    log(`uploading ${files.length} files from ${folder} (${mode})`);
    await page.evaluate(() => {
      window.__filesAt = null;
      window.__finishedAt = null;
      document.addEventListener("change", () => (window.__filesAt ??= performance.now()), true);
      // The end, stamped by the page itself when the panel says so: polling for it every
      // animation frame would make the page draw 60 frames a second for the harness,
      // CPU taken from the server it shares the machine with.
      const finished = () =>
        Array.from(document.querySelectorAll("h2")).some((h) => h.textContent === "Upload finished");
      new MutationObserver((_, observer) => {
        if (window.__filesAt !== null && finished()) {
          window.__finishedAt = performance.now();
          observer.disconnect();
        }
      }).observe(document.body, { childList: true, subtree: true, characterData: true });
    });
    if (mode === "drop") {
      await page.evaluate(() => (window.__dropFiles = []));
      for (let i = 0; i < files.length; i += 200) {
        const chunk = files.slice(i, i + 200).map((path) => ({
          name: path.split("/").pop(),
          data: readFileSync(path).toString("base64"),
        }));
        await page.evaluate((chunk) => {
          for (const { name, data } of chunk) {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            window.__dropFiles.push(new File([bytes], name, { type: "image/jpeg" }));
          }
        }, chunk);
      }
    }
    const cdp = await context.newCDPSession(page);
    await cdp.send("Performance.enable");
    const metrics = async () =>
      Object.fromEntries((await cdp.send("Performance.getMetrics")).metrics.map((m) => [m.name, m.value]));
    const before = await metrics();
    const cpuBefore = browserCpuSeconds();
    const started = Date.now();
    if (mode === "drop") {
      await page.evaluate(() => {
        const grid = document.querySelector('[aria-label="Images"]');
        const transfer = new DataTransfer();
        for (const file of window.__dropFiles) transfer.items.add(file);
        const fire = (type) =>
          grid.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
        fire("dragenter");
        fire("dragover");
        window.__filesAt = performance.now();
        fire("drop");
      });
    } else {
      await input.setInputFiles(folder);
    }
    const finishedAt = await page.waitForFunction(() => window.__finishedAt, null, {
      polling: 250,
      timeout: 30 * 60_000,
    });
    result.upload_seconds = ((await finishedAt.jsonValue()) - (await page.evaluate(() => window.__filesAt))) / 1000;
    result.upload_seconds_with_harness = (Date.now() - started) / 1000;
    // Every Chromium process's CPU (renderer, browser, network service...), up to a
    // quarter second past the end.
    result.upload_browser_cpu_s = Number((browserCpuSeconds() - cpuBefore).toFixed(3));
    const after = await metrics();
    // The page's own main-thread work meanwhile (it shares the CPU with the server).
    result.upload_renderer_busy_s = {};
    for (const key of ["TaskDuration", "ScriptDuration"]) {
      result.upload_renderer_busy_s[key] = Number((after[key] - before[key]).toFixed(3));
    }
    result.upload_summary = (await page.locator(".upload-summary").textContent())?.trim();
    // Where the time went: the upload requests as the browser timed them.
    result.upload_requests = await page.evaluate(() => {
      const posts = performance
        .getEntriesByType("resource")
        .filter((e) => e.initiatorType === "xmlhttprequest" && /\/images(\?|$)/.test(e.name));
      if (posts.length === 0) return null;
      const durations = posts.map((e) => e.duration).sort((a, b) => a - b);
      return {
        count: posts.length,
        median_ms: Math.round(durations[Math.floor(durations.length / 2)]),
        p95_ms: Math.round(durations[Math.floor(durations.length * 0.95)]),
      };
    });
    log(
      `${mode}: ${result.upload_seconds.toFixed(2)} s (${result.upload_summary}); requests ` +
        `${JSON.stringify(result.upload_requests)}; main thread ${JSON.stringify(result.upload_renderer_busy_s)}`,
    );
  }

  if (options.gallery) {
    const { project, rows } = options.gallery;
    // A fresh document, so performance.now() counts from this navigation.
    await page.goto(`${options.url}/projects/${project}`, { waitUntil: "commit" });
    const firstVisible = await page.waitForFunction(
      () => {
        const imgs = Array.from(document.querySelectorAll('[aria-label="Images"] img'));
        if (imgs.length === 0) return false;
        const top = imgs.slice(0, 7);
        return top.every((i) => i.complete && i.naturalWidth > 0) ? performance.now() : false;
      },
      null,
      { polling: "raf", timeout: 60_000 },
    );
    result.gallery_first_thumbnails_ms = await firstVisible.jsonValue();
    log(`first thumbnails visible after ${result.gallery_first_thumbnails_ms.toFixed(0)} ms`);
    const started = Date.now();
    // Scroll to the bottom again and again; the grid fetches the next keyset page each
    // time the end comes near, until every row is loaded.
    const scroll = await page.evaluate(
      async ({ rows, deadline }) => {
        const grid = document.querySelector('[aria-label="Images"]');
        const status = () => document.querySelector("p[aria-live=polite]")?.textContent ?? "";
        const loaded = () => Number((status().match(/^([\d,]+) of/) ?? ["", "0"])[1].replace(/,/g, ""));
        let steps = 0;
        let maxImgsWhileScrolling = 0;
        const end = Date.now() + deadline;
        while (Date.now() < end) {
          grid.scrollTo(0, grid.scrollHeight);
          steps += 1;
          await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 20)));
          maxImgsWhileScrolling = Math.max(maxImgsWhileScrolling, document.getElementsByTagName("img").length);
          if (loaded() >= rows && grid.scrollTop + grid.clientHeight >= grid.scrollHeight - 2) break;
        }
        return { loaded: loaded(), steps, maxImgsWhileScrolling, status: status() };
      },
      { rows, deadline: 20 * 60_000 },
    );
    result.gallery_scroll_seconds = (Date.now() - started) / 1000;
    result.gallery_rows_loaded = scroll.loaded;
    result.gallery_scroll_steps = scroll.steps;
    // Last rows on screen, with their thumbnails.
    await page.waitForFunction(
      () => Array.from(document.querySelectorAll('[aria-label="Images"] img')).some((i) => i.complete && i.naturalWidth > 0),
      null,
      { timeout: 60_000 },
    );
    result.gallery_last_name = await page
      .locator('[aria-label="Images"] img')
      .last()
      .getAttribute("alt");
    result.gallery_max_img_nodes = Math.max(await page.evaluate(() => window.__maxImgs), scroll.maxImgsWhileScrolling);
    result.gallery_js_heap_mib = await page.evaluate(() =>
      performance.memory ? performance.memory.usedJSHeapSize / 2 ** 20 : null,
    );
    log(`scrolled to row ${scroll.loaded} in ${result.gallery_scroll_seconds.toFixed(1)} s; max <img> ${result.gallery_max_img_nodes}`);
  }
  await context.close();
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(result)}\n`);
