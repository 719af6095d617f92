// The jobs list and the job page against a real standalone server (one CPU slot, one
// CPU-backed GPU slot: a long diagnostic job holds the GPU slot so others wait in line).
import { readFileSync } from "node:fs";
import type { Page } from "@playwright/test";
import { expect, png, screenshot, test } from "./fixtures";
import { apiCall, createProject, signInAsAdmin, unique, zip, zipNames } from "./support";

interface JobBody {
  id: number;
  state: string;
  position: number | null;
}

async function csrf(page: Page): Promise<string> {
  return (await page.context().cookies()).find((c) => c.name === "oculab_csrf")?.value ?? "";
}

async function importZip(page: Page, projectId: number, body: Buffer): Promise<JobBody> {
  const response = await page.request.post(`/api/projects/${projectId}/imports`, {
    multipart: { file: { name: "birds.zip", mimeType: "application/zip", buffer: body } },
    headers: { "X-CSRF-Token": await csrf(page) },
  });
  expect(response.status(), await response.text()).toBe(202);
  return (await response.json()) as JobBody;
}

async function waitFinished(page: Page, jobId: number): Promise<JobBody> {
  let job: JobBody | null = null;
  await expect
    .poll(
      async () => {
        job = await apiCall<JobBody>(page, "GET", `/api/jobs/${jobId}`);
        return job.state;
      },
      { timeout: 30_000 },
    )
    .toMatch(/succeeded|failed|canceled/);
  return job as unknown as JobBody;
}

function ordinal(n: number): string {
  const tens = n % 100;
  if (tens >= 11 && tens <= 13) return `${n}th`;
  return `${n}${["th", "st", "nd", "rd"][n % 10] ?? "th"}`;
}

test("the job list shows an import and an export; their pages show the counts, issues and the zip", async ({ page }) => {
  await signInAsAdmin(page);
  const project = await createProject(page, unique("Jobs"), ["bird"]);
  const imported = await importZip(
    page,
    project.id,
    zip({
      "data.yaml": "names: [bird]\n",
      "images/train/a.png": png(31),
      "labels/train/a.txt": "0 0.5 0.5 0.25 0.25\n",
      "images/train/b.png": png(32),
      "labels/train/b.txt": "0 0.4 0.4 0.2 0.2\n3 0.5 0.5 0.2 0.2\n",
    }),
  );
  expect((await waitFinished(page, imported.id)).state).toBe("succeeded");
  const exported = await apiCall<JobBody>(page, "POST", `/api/projects/${project.id}/exports`, {
    format: "yolo",
    only_reviewed: true,
  });
  expect((await waitFinished(page, exported.id)).state).toBe("succeeded");

  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Jobs" }).click();
  await expect(page.getByRole("heading", { name: "Jobs", level: 1 })).toBeVisible();
  const jobs = page.getByRole("table", { name: "Jobs" });
  const exportRow = jobs.getByRole("row", { name: new RegExp(`Job ${exported.id}: export`) });
  await expect(exportRow).toContainText("Succeeded");
  await expect(exportRow).toContainText(project.name);
  await expect(exportRow).toContainText("admin");
  await expect(jobs.getByRole("row", { name: new RegExp(`Job ${imported.id}: import`) })).toContainText("Succeeded");
  // The filter by state keeps them (both succeeded) and drops them for "Failed".
  await page.getByLabel("State").selectOption("failed");
  await expect(jobs.getByRole("row", { name: new RegExp(`Job ${exported.id}:`) })).toHaveCount(0);
  await page.getByLabel("State").selectOption("succeeded");
  await expect(exportRow).toBeVisible();
  await screenshot(page, "jobs-list");

  await exportRow.getByRole("link", { name: `Job ${exported.id}: export` }).click();
  await expect(page.getByRole("heading", { name: `Job ${exported.id}: export`, level: 1 })).toBeVisible();
  const result = page.getByRole("region", { name: "Result" });
  await expect(result).toContainText("2 images and 2 boxes in YOLO");
  const download = result.getByRole("link", { name: /^Download the zip/ });
  await expect(download).toHaveAttribute("href", `/api/jobs/${exported.id}/artifact`);
  await expect(page.getByLabel("Job details")).toContainText("Attempts1 of");
  await expect(page.getByRole("button", { name: "Cancel job" })).toHaveCount(0);
  await screenshot(page, "job-export");
  const [file] = await Promise.all([page.waitForEvent("download"), download.click()]);
  expect(zipNames(readFileSync(await file.path()))).toContain("data.yaml");

  // The project's own jobs page lists the import; its page shows counts and the issue.
  await page.goto(`/projects/${project.id}/jobs`);
  await expect(page.getByRole("heading", { name: `Jobs of ${project.name}`, level: 1 })).toBeVisible();
  await page.getByRole("link", { name: `Job ${imported.id}: import` }).click();
  const counts = page.getByLabel("Import counts");
  const count = (label: string) => counts.locator("div").filter({ hasText: label }).getByRole("definition");
  await expect(count("Images added")).toHaveText("2");
  await expect(count("Boxes imported")).toHaveText("2");
  const issue = page.getByRole("table", { name: "Import issues" }).getByRole("row").filter({ hasText: "labels/train/b.txt" });
  await expect(issue.getByRole("cell").nth(1)).toHaveText("2");
  await screenshot(page, "job-import");
});

test("a waiting GPU job: its place in the queue, a live log that follows, and cancel", async ({ page }) => {
  await signInAsAdmin(page);
  // A sleeping job takes the GPU pool's one slot; three more wait behind it.
  const [holder] = await apiCall<JobBody[]>(page, "POST", "/api/admin/diagnostics/jobs", {
    pool: "gpu",
    count: 1,
    seconds: 300,
  });
  if (!holder) throw new Error("one job was asked for");
  await expect
    .poll(async () => (await apiCall<JobBody>(page, "GET", `/api/jobs/${holder.id}`)).state, { timeout: 30_000 })
    .toBe("running");
  const waiting = await apiCall<JobBody[]>(page, "POST", "/api/admin/diagnostics/jobs", { pool: "gpu", count: 3 });
  const [, , last] = waiting;
  if (!last) throw new Error("three jobs were asked for");
  const place = (await apiCall<JobBody>(page, "GET", `/api/jobs/${last.id}`)).position ?? 0;
  expect(place).toBeGreaterThanOrEqual(3);
  const where = `${ordinal(place)} in the GPU queue`;

  await page.goto("/jobs");
  const row = page.getByRole("table", { name: "Jobs" }).getByRole("row", { name: new RegExp(`Job ${last.id}: diagnostic`) });
  await expect(row).toContainText(where);
  await expect(row).toContainText("Waiting");
  const running = page.getByRole("table", { name: "Jobs" }).getByRole("row", { name: new RegExp(`Job ${holder.id}: diagnostic`) });
  await expect(running).toContainText("Running");
  await expect(running.getByRole("progressbar", { name: `Progress of job ${holder.id}` })).toBeVisible();
  await expect(page.getByText("live", { exact: true })).toBeVisible();
  await screenshot(page, "jobs-waiting");

  await row.getByRole("link", { name: `Job ${last.id}: diagnostic (no-op)` }).click();
  await expect(page.getByText(where)).toBeVisible();
  const log = page.getByRole("log", { name: "Job log" });
  const follow = page.getByRole("button", { name: /Follow/ });
  await expect(follow).toHaveAttribute("aria-pressed", "true");

  // Lines logged while the page is open arrive through the event stream.
  const bump = async (from: number, to: number) => {
    for (let p = from; p < to; p++) {
      await apiCall(page, "POST", `/api/admin/jobs/${last.id}/priority`, { priority: -(p % 2) - 1 });
    }
  };
  await bump(0, 1);
  await expect(log).toContainText("priority 0 -> -1 by admin");
  await bump(1, 60);
  const lines = () => log.locator(".job-log-line").count();
  await expect(log).toContainText("priority -2 -> -1 by admin");
  await expect.poll(lines, { timeout: 20_000 }).toBeGreaterThanOrEqual(60);
  const gap = () => log.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
  await expect.poll(gap).toBeLessThanOrEqual(4); // it followed the end

  // Scrolled up, it stays where the reader is while lines keep coming.
  await log.evaluate((el) => {
    el.scrollTop = 0;
  });
  await expect(follow).toHaveAttribute("aria-pressed", "false");
  await expect(follow).toHaveText("Follow the log");
  const before = await lines();
  await bump(60, 65);
  await expect.poll(lines, { timeout: 20_000 }).toBe(before + 5);
  expect(await log.evaluate((el) => el.scrollTop)).toBe(0);
  await screenshot(page, "job-log-scrolled-up");
  await follow.click();
  await expect.poll(gap).toBeLessThanOrEqual(4);
  await expect(follow).toHaveAttribute("aria-pressed", "true");

  // Cancel asks first; "keep it" keeps it.
  await page.getByRole("button", { name: "Cancel job" }).click();
  const confirm = page.getByRole("dialog", { name: `Cancel job ${last.id}?` });
  await expect(confirm).toContainText("leaves the queue and never runs");
  await screenshot(page, "job-cancel-confirm");
  await confirm.getByRole("button", { name: "Keep it waiting" }).click();
  await expect(confirm).toBeHidden();
  expect((await apiCall<JobBody>(page, "GET", `/api/jobs/${last.id}`)).state).toBe("queued");
  await page.getByRole("button", { name: "Cancel job" }).click();
  await confirm.getByRole("button", { name: `Yes, cancel job ${last.id}` }).click();
  await expect(page.getByRole("region", { name: "Canceled" })).toContainText("canceled before it started");
  await expect(page.getByRole("button", { name: "Cancel job" })).toHaveCount(0);
  expect((await apiCall<JobBody>(page, "GET", `/api/jobs/${last.id}`)).state).toBe("canceled");
  await screenshot(page, "job-canceled");

  for (const job of [...waiting.slice(0, 2), holder]) await apiCall(page, "POST", `/api/jobs/${job.id}/cancel`);
});
