// The admin's GPU queue page against the real standalone server (one in-process worker
// on the cpu pool, one slot): drain it, watch jobs queue up, reorder them, undrain.
import { expect, screenshot, test } from "./fixtures";
import { apiCall, createUser, signInAsAdmin, unique } from "./support";

interface Queue {
  workers: { id: string; hostname: string; pools: string[]; draining: boolean }[];
}

test("an admin drains the worker, sees the queue grow, reorders it and undrains", async ({ page }) => {
  await signInAsAdmin(page);
  const { workers } = await apiCall<Queue>(page, "GET", "/api/admin/queue");
  const worker = workers.find((w) => w.pools.includes("cpu"));
  expect(worker, "the standalone server's in-process cpu worker").toBeTruthy();
  const { id, hostname } = worker!;
  const drainName = `Drain worker ${id}`;
  const undrainName = `Undrain worker ${id}`;
  try {
    await page.getByRole("link", { name: "GPU queue" }).click();
    await expect(page.getByRole("heading", { name: "GPU queue", level: 1 })).toBeVisible();
    await expect(page.getByRole("status")).toHaveText("Live");
    const card = page.getByRole("listitem", { name: `Worker ${id} on ${hostname}` });
    await expect(card).toContainText(/heartbeat \d+ s ago/);

    await card.getByRole("button", { name: drainName }).click();
    await expect(card.getByRole("button", { name: undrainName })).toBeVisible();
    await expect(card).toContainText("draining");

    const jobs = await apiCall<{ id: number }[]>(page, "POST", "/api/admin/diagnostics/jobs", {
      pool: "cpu",
      count: 3,
      seconds: 0,
    });
    const [first, second, third] = jobs.map((j) => j.id) as [number, number, number];
    // The stream brings them in, no reload: three jobs waiting, in submission order.
    const queue = page.getByRole("table", { name: "Queue" });
    const rowOf = (jobId: number) => queue.locator(`[data-job-id="${jobId}"]`);
    await expect(rowOf(third)).toContainText("3rd in line");
    await expect(rowOf(first)).toContainText("1st in line");
    await expect(rowOf(first)).toContainText("Diagnostic (no-op)");
    const cpuQueued = page.getByRole("row", { name: /^cpu CPU/ }).getByRole("cell").first();
    await expect(cpuQueued).toHaveText("3");
    const order = () => queue.locator("[data-job-id]").evaluateAll((rows) => rows.map((r) => Number(r.getAttribute("data-job-id"))));
    expect((await order()).filter((j) => jobs.some((x) => x.id === j))).toEqual([first, second, third]);
    await screenshot(page, "admin-queue-drained");

    await rowOf(third).getByRole("button", { name: `Change priority of job ${third}` }).click();
    const dialog = page.getByRole("dialog", { name: `Priority of job #${third}` });
    await dialog.getByRole("spinbutton", { name: "Priority" }).fill("10");
    await dialog.getByRole("button", { name: "Save priority" }).click();
    await expect(dialog).toBeHidden();
    await expect(rowOf(third)).toContainText("1st in line");
    await expect(rowOf(first)).toContainText("2nd in line");
    expect((await order()).filter((j) => jobs.some((x) => x.id === j))).toEqual([third, first, second]);
    await screenshot(page, "admin-queue-reordered");

    await card.getByRole("button", { name: undrainName }).click();
    await expect(card.getByRole("button", { name: drainName })).toBeVisible();
    // The worker takes them: they leave the queue.
    for (const jobId of [first, second, third]) await expect(rowOf(jobId)).toHaveCount(0, { timeout: 30_000 });
    await screenshot(page, "admin-queue");
  } finally {
    // Later specs need the worker: never leave it drained.
    await apiCall(page, "POST", `/api/admin/workers/${id}/drain`, { draining: false });
  }
});

test("a non-admin sees no admin menu and gets the 403 page at /admin/queue", async ({ page, browser }) => {
  await signInAsAdmin(page);
  const name = unique("plain");
  await createUser(page, name, "plain-user-password-1");

  const context = await browser.newContext();
  const theirs = await context.newPage();
  await theirs.goto("/signin");
  await theirs.getByLabel("Username").fill(name);
  await theirs.getByLabel("Password").fill("plain-user-password-1");
  await theirs.getByRole("button", { name: "Sign in", exact: true }).click();
  await expect(theirs).toHaveURL(/\/projects$/);
  const nav = theirs.getByRole("navigation").first();
  await expect(nav.getByRole("link", { name: "Projects" })).toBeVisible();
  for (const item of ["GPU queue", "Users", "Audit log"]) {
    await expect(theirs.getByRole("link", { name: item })).toHaveCount(0);
  }
  await theirs.goto("/admin/queue");
  await expect(theirs.getByRole("heading", { name: "Forbidden", level: 1 })).toBeVisible();
  await expect(theirs.getByRole("table", { name: "Queue" })).toHaveCount(0);
  await screenshot(theirs, "admin-queue-forbidden");
  await context.close();
});
