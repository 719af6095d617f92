// Helpers for the editor and review end-to-end tests: sessions without the sign-in form
// (the login rate limit allows 10 tries a minute per account), API calls as a signed-in
// browser, seeded images and predictions, the canvas's image ↔ screen mapping, and a
// standalone server of a test's own that it can stop and start again.
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type APIRequestContext, type Browser, type BrowserContext, expect, type Locator, type Page } from "@playwright/test";
import { PASSWORD, png } from "./fixtures";

type State = Awaited<ReturnType<BrowserContext["storageState"]>>;
const sessions = new Map<string, State>();

/** Signs `username` in through the API once per test run and origin; reuses the cookies. */
export async function session(browser: Browser, baseURL: string, username = "admin", password = PASSWORD()): Promise<State> {
  const key = `${baseURL} ${username}`;
  const known = sessions.get(key);
  if (known) return known;
  const context = await browser.newContext({ baseURL });
  const response = await context.request.post("/api/auth/local/login", { data: { username, password } });
  expect(response.status(), await response.text()).toBe(200);
  const state = await context.storageState();
  await context.close();
  sessions.set(key, state);
  return state;
}

/** Puts a session's cookies into the page's context (the test's own page). */
export async function useSession(page: Page, state: State): Promise<void> {
  await page.context().clearCookies();
  await page.context().addCookies(state.cookies);
}

/** A page of its own context, watched for script errors and CSP violations. */
export async function newPage(browser: Browser, baseURL: string, state: State, problems: string[]): Promise<Page> {
  const context = await browser.newContext({ baseURL, storageState: state, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  watch(page, problems);
  return page;
}

export function watch(page: Page, problems: string[]): void {
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && /Content Security Policy|Refused to/i.test(message.text())) {
      problems.push(`CSP: ${message.text()}`);
    }
  });
}

async function csrfOf(request: APIRequestContext): Promise<string> {
  const state = await request.storageState();
  return state.cookies.find((c) => c.name === "oculab_csrf")?.value ?? "";
}

export async function call<T>(
  request: APIRequestContext,
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE",
  path: string,
  data?: unknown,
  expected: number[] = [200, 201, 202, 204],
): Promise<T> {
  const response = await request.fetch(path, {
    method,
    data: data === undefined ? undefined : (data as object),
    headers: method === "GET" ? {} : { "X-CSRF-Token": await csrfOf(request) },
  });
  expect(expected, `${method} ${path}: ${response.status()} ${await response.text()}`).toContain(response.status());
  return (response.status() === 204 ? undefined : await response.json()) as T;
}

export const unique = (prefix: string) => `${prefix} ${Date.now().toString(36)}${Math.floor(Math.random() * 1000)}`;

export interface Seeded {
  projectId: number;
  imageIds: number[];
  name: string;
}

/** A project with `count` images of `width`×`height` (distinct pixels each). */
export async function seedProject(
  request: APIRequestContext,
  { classes = ["car", "person", "bicycle"], count = 1, width = 800, height = 600, prefix = "Editor" } = {},
): Promise<Seeded> {
  const name = unique(prefix);
  const project = await call<{ id: number }>(request, "POST", "/api/projects", { name, classes });
  const multipart: Record<string, { name: string; mimeType: string; buffer: Buffer }> = {};
  const seed = Math.floor(Math.random() * 10_000);
  for (let i = 0; i < count; i++) {
    multipart[`f${i}`] = { name: `img_${String(i).padStart(3, "0")}.png`, mimeType: "image/png", buffer: png(seed + i * 7, width, height) };
  }
  const response = await request.post(`/api/projects/${project.id}/images`, {
    multipart,
    headers: { "X-CSRF-Token": await csrfOf(request) },
    timeout: 60_000,
  });
  expect(response.status(), await response.text()).toBe(201);
  const body = (await response.json()) as { items: { image_id: number }[] };
  return { projectId: project.id, imageIds: body.items.map((i) => i.image_id), name };
}

export interface ApiBox {
  class_id: number;
  x: number;
  y: number;
  w: number;
  h: number;
  source?: string;
  confidence?: number | null;
  status?: "predicted" | "accepted" | "rejected";
}

export async function annotations(request: APIRequestContext, imageId: number) {
  return call<{ revision: number; status: string; boxes: Required<ApiBox>[] }>(request, "GET", `/api/images/${imageId}/annotations`);
}

/** Boxes as a model would leave them (status predicted, with confidences). */
export async function predict(request: APIRequestContext, imageId: number, boxes: ApiBox[]): Promise<void> {
  const { revision } = await annotations(request, imageId);
  await call(request, "PUT", `/api/images/${imageId}/annotations`, {
    base_revision: revision,
    boxes: boxes.map((b) => ({ source: "manual", status: "predicted", ...b })),
  });
}

export async function addMember(request: APIRequestContext, projectId: number, userId: number, role: string) {
  await call(request, "PUT", `/api/projects/${projectId}/members/${userId}`, { role });
}

export async function createUser(request: APIRequestContext, username: string, password: string): Promise<number> {
  const user = await call<{ id: number }>(request, "POST", "/api/admin/users", { username, password, is_admin: false });
  return user.id;
}

// ---- the canvas -------------------------------------------------------------------------

export function canvas(page: Page): Locator {
  return page.getByRole("application", { name: "Image canvas" });
}

/** Waits until the editor drew the image and its boxes. */
export async function openEditor(page: Page, projectId: number, imageId: number): Promise<void> {
  await page.goto(`/projects/${projectId}/images/${imageId}`);
  await expect(canvas(page)).toHaveAttribute("data-ready", "true");
}

/** Where an image pixel is on the screen, with the image fitted (the editor's start). */
export async function toScreen(page: Page, image: { width: number; height: number }, point: { x: number; y: number }) {
  const box = await canvas(page).boundingBox();
  if (!box) throw new Error("no canvas");
  const margin = 16;
  const scale = Math.min((box.width - 2 * margin) / image.width, (box.height - 2 * margin) / image.height);
  const left = (box.width - image.width * scale) / 2;
  const top = (box.height - image.height * scale) / 2;
  return { x: box.x + left + point.x * scale, y: box.y + top + point.y * scale };
}

/** A drag with the mouse between two image points (in steps, as a hand would). */
export async function drag(page: Page, image: { width: number; height: number }, from: { x: number; y: number }, to: { x: number; y: number }) {
  const a = await toScreen(page, image, from);
  const b = await toScreen(page, image, to);
  await page.mouse.move(a.x, a.y);
  await page.mouse.down();
  await page.mouse.move((a.x + b.x) / 2, (a.y + b.y) / 2, { steps: 5 });
  await page.mouse.move(b.x, b.y, { steps: 5 });
  await page.mouse.up();
}

export async function expectSaved(page: Page): Promise<void> {
  await expect(page.getByRole("status").filter({ hasText: /saved|Saving|Unsaved|Offline|Not saved|Someone/ })).toHaveText(
    "All changes saved",
    { timeout: 20_000 },
  );
}

// ---- a server of the test's own ---------------------------------------------------------

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");

export interface OwnServer {
  url: string;
  dataDir: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  dispose(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? done(address.port) : fail(new Error("no port assigned"))));
    });
  });
}

/** `oculab standalone` on its own port and data dir (SQLite inside it), restartable. */
export async function ownServer(): Promise<OwnServer> {
  const dataDir = mkdtempSync(join(tmpdir(), "oculab-e2e-own-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith("OCULAB_")) env[key] = value;
  Object.assign(env, {
    OCULAB_DATA_DIR: dataDir,
    OCULAB_ADMIN_PASSWORD: PASSWORD(),
    OCULAB_SEED_DEMO: "false",
    OCULAB_FSYNC: "false",
    OCULAB_STANDALONE_GPU_SLOTS: "0",
    OCULAB_STANDALONE_CPU_SLOTS: "1",
  });
  mkdirSync(join(here, "..", "test-results"), { recursive: true });
  const log = createWriteStream(join(here, "..", "test-results", "own-server.log"), { flags: "a" });
  let child: ChildProcess | null = null;
  const own: OwnServer = {
    url,
    dataDir,
    async start() {
      child = spawn(process.env.OCULAB_BIN ?? join(root, ".venv", "bin", "oculab"), ["standalone", "--host", "127.0.0.1", "--port", String(port)], {
        cwd: dataDir,
        env,
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout?.pipe(log, { end: false });
      child.stderr?.pipe(log, { end: false });
      const deadline = Date.now() + 90_000;
      while (Date.now() < deadline) {
        if (child.exitCode !== null) throw new Error(`oculab standalone exited (${child.exitCode}); see own-server.log`);
        try {
          if ((await fetch(`${url}/api/health`)).ok) return;
        } catch {
          // not up yet
        }
        await new Promise((r) => setTimeout(r, 250));
      }
      throw new Error("oculab standalone did not start within 90 s");
    },
    async stop() {
      const running = child;
      child = null;
      if (!running || running.exitCode !== null) return;
      const exited = new Promise((r) => running.once("exit", r));
      running.kill("SIGTERM");
      const timer = setTimeout(() => running.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    },
    async dispose() {
      await own.stop();
      log.end();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  await own.start();
  return own;
}
