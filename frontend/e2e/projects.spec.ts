import { expect, screenshot, test } from "./fixtures";
import { apiCall, createProject, createUser, signInAsAdmin, unique } from "./support";

test("an owner renames a project, adds a class, adds a member, changes their role and deletes it", async ({
  page,
}) => {
  await signInAsAdmin(page);
  const project = await createProject(page, unique("Settings"), ["car"]);
  const member = unique("ann");
  await createUser(page, member, "annotator-password-1");

  await page.goto(`/projects/${project.id}`);
  await page.getByRole("toolbar", { name: "Project actions" }).getByRole("link", { name: "Settings" }).click();
  await expect(page.getByRole("heading", { name: "Project settings", level: 1 })).toBeVisible();
  const renamed = `${project.name} (renamed)`;
  await page.getByLabel("Name", { exact: true }).fill(renamed);
  await page.getByLabel("Description").fill("Cars and people on campus.");
  await page.getByLabel("New class names").fill("person");
  await page.getByRole("button", { name: "Add class" }).click();
  await page.getByLabel("Colour of person").fill("#00aa55");
  await page.getByRole("button", { name: "Move person up" }).click();
  await expect(page.getByLabel("Name of class 0")).toHaveValue("person");
  await page.getByRole("button", { name: "Save changes" }).click();
  await expect(page.getByRole("status")).toHaveText("Saved.");
  await expect(page.getByRole("navigation", { name: "Breadcrumb" })).toContainText(renamed);

  // A name another project cannot share? Blank names are refused before sending.
  await page.getByLabel("Name", { exact: true }).fill("   ");
  await expect(page.getByRole("button", { name: "Save changes" })).toBeDisabled();
  await page.getByRole("button", { name: "Discard changes" }).click();

  // Members: find the new user, add as annotator, make them a viewer.
  const members = page.getByRole("table", { name: "Members" });
  await expect(members.getByRole("row")).toHaveCount(2); // header + the admin
  await expect(members.getByRole("row", { name: /admin/ })).toContainText("The last owner");
  await expect(members.getByRole("button", { name: /Leave project|Remove admin/ })).toHaveCount(0);
  await page.getByLabel("Find people").fill(member.slice(0, 8));
  await page.getByRole("button", { name: `Add ${member} as annotator` }).click();
  const row = members.getByRole("row", { name: new RegExp(member) });
  await expect(row.getByRole("combobox", { name: `Role of ${member}` })).toHaveValue("annotator");
  await row.getByRole("combobox", { name: `Role of ${member}` }).selectOption("viewer");
  await expect(row.getByRole("combobox", { name: `Role of ${member}` })).toHaveValue("viewer");
  const listed = await apiCall<Array<{ username: string; role: string }>>(
    page,
    "GET",
    `/api/projects/${project.id}/members`,
  );
  expect(listed.find((m) => m.username === member)?.role).toBe("viewer");
  await screenshot(page, "project-settings");

  await page.getByRole("link", { name: renamed }).click();
  await expect(page.getByRole("heading", { name: renamed, level: 1 })).toBeVisible();
  await page.getByRole("toolbar", { name: "Project actions" }).getByRole("link", { name: "Settings" }).click();
  await page.getByRole("button", { name: "Delete project…" }).click();
  const dialog = page.getByRole("dialog", { name: `Delete “${renamed}”?` });
  await expect(dialog).toContainText(`This deletes the project “${renamed}” with its 0 images`);
  const confirm = dialog.getByRole("button", { name: `Delete “${renamed}”` });
  await expect(confirm).toBeDisabled();
  await dialog.getByLabel("Type the project’s name to confirm").fill(renamed);
  await screenshot(page, "project-delete-confirm");
  await confirm.click();
  await expect(page).toHaveURL(/\/projects$/);
  await expect(page.getByRole("link", { name: renamed })).toHaveCount(0);
});

test("an annotator sees no settings, upload or member controls", async ({ page, browser }) => {
  await signInAsAdmin(page);
  const project = await createProject(page, unique("Shared"), ["car"]);
  const annotator = unique("anna");
  const user = await createUser(page, annotator, "annotator-password-2");
  await apiCall(page, "PUT", `/api/projects/${project.id}/members/${user.id}`, { role: "annotator" });

  const context = await browser.newContext();
  const theirs = await context.newPage();
  await theirs.goto("/signin");
  await theirs.getByLabel("Username").fill(annotator);
  await theirs.getByLabel("Password").fill("annotator-password-2");
  await theirs.getByRole("button", { name: "Sign in", exact: true }).click();
  await expect(theirs).toHaveURL(/\/projects$/);
  await theirs.getByRole("link", { name: project.name }).click();
  await expect(theirs.getByRole("heading", { name: project.name, level: 1 })).toBeVisible();
  const actions = theirs.getByRole("toolbar", { name: "Project actions" });
  await expect(actions.getByRole("button", { name: "Export dataset" })).toBeVisible();
  for (const name of ["Upload files", "Upload folder"]) await expect(theirs.getByLabel(name)).toHaveCount(0);
  await expect(actions.getByRole("button", { name: "Import dataset" })).toHaveCount(0);
  await expect(actions.getByRole("link", { name: "Settings" })).toHaveCount(0);
  await screenshot(theirs, "annotator-gallery");

  await actions.getByRole("link", { name: "Members" }).click();
  await expect(theirs.getByRole("heading", { name: project.name, level: 1 })).toBeVisible();
  await expect(theirs.getByText("Only the project’s owners can change its settings and members.")).toBeVisible();
  await expect(theirs.getByRole("textbox")).toHaveCount(0);
  await expect(theirs.getByRole("combobox")).toHaveCount(0);
  await expect(theirs.getByRole("button", { name: /Save|Delete|Remove|Add/ })).toHaveCount(0);
  await expect(theirs.getByRole("button", { name: "Leave project" })).toBeVisible();
  await screenshot(theirs, "annotator-members");

  // The settings address itself offers nothing more.
  await theirs.goto(`/projects/${project.id}/settings`);
  await expect(theirs.getByRole("button", { name: "Delete project…" })).toHaveCount(0);
  await context.close();
});

test("a non-member gets 'not found' for a project's settings", async ({ page, browser }) => {
  await signInAsAdmin(page);
  const project = await createProject(page, unique("Private"));
  const stranger = unique("stranger");
  await createUser(page, stranger, "stranger-password-3");
  const context = await browser.newContext();
  const theirs = await context.newPage();
  await theirs.goto(`/projects/${project.id}/settings`);
  await theirs.getByLabel("Username").fill(stranger);
  await theirs.getByLabel("Password").fill("stranger-password-3");
  await theirs.getByRole("button", { name: "Sign in", exact: true }).click();
  await expect(theirs.getByRole("heading", { name: "Not found" })).toBeVisible();
  await context.close();
});
