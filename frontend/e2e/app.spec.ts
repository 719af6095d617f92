import { expect, PASSWORD, png, screenshot, signIn, test } from "./fixtures";

test("a wrong password says so and signs nobody in", async ({ page, problems }) => {
  await page.goto("/projects");
  await expect(page).toHaveURL(/\/signin$/);
  await expect(page.getByRole("heading", { name: "Sign in to Oculab" })).toBeVisible();
  await signIn(page, "not-the-password");
  await expect(page.getByRole("alert")).toHaveText("Wrong username or password.");
  await expect(page.getByLabel("Password")).toHaveValue("");
  await expect(page).toHaveURL(/\/signin$/);
  await screenshot(page, "signin-wrong-password");
  expect(problems).toEqual([]);
});

test("sign in, come back to the page asked for, create a project, see it, sign out", async ({
  page,
}) => {
  await page.goto("/projects/new");
  await expect(page).toHaveURL(/\/signin\?next=%2Fprojects%2Fnew$/);
  await signIn(page);
  await expect(page).toHaveURL(/\/projects\/new$/);
  await expect(page.getByRole("heading", { name: "New project" })).toBeVisible();

  const name = `Street scenes ${Date.now()}`;
  await page.getByLabel("Name", { exact: true }).fill(name);
  await page.getByLabel("Description").fill("Dashcam frames from the north campus.");
  await page.getByLabel("New class names").fill("car, person");
  await page.getByRole("button", { name: "Add class" }).click();
  await page.getByLabel("New class names").fill("bicycle");
  await page.getByLabel("New class names").press("Enter");
  await page.getByLabel("Colour of person").fill("#00aa55");
  await page.getByRole("button", { name: "Move bicycle up" }).click();
  await expect(page.getByLabel("Name of class 1")).toHaveValue("bicycle");
  await screenshot(page, "new-project");
  await page.getByRole("button", { name: "Create project" }).click();

  await expect(page.getByRole("heading", { name, level: 1 })).toBeVisible();
  await expect(page.getByText("No images in this project yet.")).toBeVisible();
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Projects" }).click();
  const card = page.getByRole("listitem").filter({ has: page.getByRole("link", { name }) });
  await expect(card).toBeVisible();
  await expect(card.getByRole("list", { name: `Classes of ${name}` })).toHaveText(/car.*bicycle.*person/);
  await screenshot(page, "projects");

  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/signin$/);
  await page.goto("/projects");
  await expect(page).toHaveURL(/\/signin$/);
  await screenshot(page, "signed-out");
});

test("a project's images show as a virtual grid with status filters", async ({ page }) => {
  await page.goto("/signin");
  await signIn(page, PASSWORD());
  await expect(page).toHaveURL(/\/projects$/);

  const csrf = (await page.context().cookies()).find((c) => c.name === "oculab_csrf")?.value ?? "";
  const created = await page.request.post("/api/projects", {
    data: { name: `Gallery ${Date.now()}`, classes: ["shape"] },
    headers: { "X-CSRF-Token": csrf },
  });
  expect(created.status()).toBe(201);
  const project = (await created.json()) as { id: number; name: string };
  const count = 150;
  const multipart: Record<string, { name: string; mimeType: string; buffer: Buffer }> = {};
  for (let i = 0; i < count; i++) {
    multipart[`file${i}`] = { name: `frame_${String(i).padStart(4, "0")}.png`, mimeType: "image/png", buffer: png(i) };
  }
  const upload = await page.request.post(`/api/projects/${project.id}/images`, {
    multipart,
    headers: { "X-CSRF-Token": csrf },
    timeout: 120_000,
  });
  expect(upload.status()).toBe(201);

  await page.goto(`/projects/${project.id}`);
  await expect(page.getByRole("heading", { name: project.name, level: 1 })).toBeVisible();
  await expect(page.getByText(`150 of 150 images loaded`)).toBeVisible();
  const grid = page.getByRole("region", { name: "Images" });
  await expect(grid.getByRole("img", { name: "frame_0000.png" })).toBeVisible();
  // Only the rows in view are in the DOM.
  const rendered = await grid.getByRole("img").count();
  expect(rendered).toBeGreaterThan(0);
  expect(rendered).toBeLessThan(count);
  // The thumbnails in view load from the API (the CSP allows images from 'self' only).
  await expect
    .poll(() =>
      grid
        .getByRole("img")
        .evaluateAll((imgs) =>
          imgs.slice(0, 12).every((i) => (i as HTMLImageElement).complete && (i as HTMLImageElement).naturalWidth > 0),
        ),
    )
    .toBe(true);
  await screenshot(page, "project-gallery");

  await grid.evaluate((el) => el.scrollTo(0, el.scrollHeight));
  await expect(grid.getByRole("img", { name: "frame_0149.png" })).toBeVisible();

  await page.getByRole("radio", { name: "Reviewed (0)" }).check();
  await expect(page).toHaveURL(/status=reviewed/);
  await expect(page.getByText("No reviewed images.")).toBeVisible();
  await page.getByRole("radio", { name: "Unlabeled (150)" }).check();
  await expect(page.getByText("150 of 150 images loaded")).toBeVisible();
});
