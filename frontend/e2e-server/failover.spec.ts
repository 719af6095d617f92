// Server mode: two workers on the admin's queue page, and a job that moves from one to
// the other when its worker is killed (SIGKILL: no goodbye, only silence).
import { expect, screenshot, test } from "../e2e/fixtures";
import { apiCall, signInAsAdmin } from "../e2e/support";

interface Queue {
  workers: { id: string; hostname: string; pools: string[] }[];
  jobs: { id: number; state: string; worker: string | null }[];
}

/** Worker ids are `<host>-<pid>-<random>`. */
const pidOf = (workerId: string) => Number(workerId.split("-").at(-2));

test("two workers on the queue page; a killed worker's job moves to the other", async ({ page }) => {
  await signInAsAdmin(page);
  await page.goto("/admin/queue");
  await expect(page.getByRole("status")).toHaveText("Live");
  const cards = page.getByRole("listitem", { name: /^Worker / });
  await expect(cards).toHaveCount(2, { timeout: 30_000 });
  const { workers } = await apiCall<Queue>(page, "GET", "/api/admin/queue");
  expect(workers.map((w) => w.pools)).toEqual([["cpu"], ["cpu"]]);

  const [job] = await apiCall<{ id: number }[]>(page, "POST", "/api/admin/diagnostics/jobs", {
    pool: "cpu",
    count: 1,
    seconds: 600,
  });
  const row = page.getByRole("table", { name: "Queue" }).locator(`[data-job-id="${job!.id}"]`);
  await expect(row).toContainText("Running on", { timeout: 30_000 });
  const running = await apiCall<Queue>(page, "GET", "/api/admin/queue");
  const first = running.jobs.find((j) => j.id === job!.id)?.worker;
  expect(first).toBeTruthy();
  const other = workers.find((w) => w.id !== first)!;
  await expect(row).toContainText(`Running on ${first}`);
  await expect(page.getByRole("listitem", { name: `Worker ${first} on ${other.hostname}` })).toContainText(
    `job #${job!.id}`,
  );
  await screenshot(page, "server-queue-two-workers");

  process.kill(pidOf(first!), "SIGKILL");
  // Its heartbeat goes stale on the page, then the scheduler hands the job to the other.
  await expect(row).toContainText(`Running on ${other.id}`, { timeout: 45_000 });
  await expect(page.getByRole("listitem", { name: `Worker ${other.id} on ${other.hostname}` })).toContainText(
    `job #${job!.id}`,
  );
  await expect(cards).toHaveCount(1, { timeout: 15_000 });
  await screenshot(page, "server-queue-failover");
  await apiCall(page, "POST", `/api/jobs/${job!.id}/cancel`);
});
