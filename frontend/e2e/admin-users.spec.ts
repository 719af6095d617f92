// Admin — users and audit: an admin makes a local account, its owner signs in, the
// admin resets the password and disables the account; the audit log shows it all.
import type { Browser, Page } from "@playwright/test";
import { expect, screenshot, test } from "./fixtures";
import { signInAsAdmin, unique } from "./support";

async function signInAs(browser: Browser, username: string, password: string): Promise<Page> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto("/signin");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  return page;
}

test("an admin creates a local user who signs in; a new password works; disabled, they are refused", async ({
  page,
  browser,
}) => {
  await signInAsAdmin(page);
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Users" }).click();
  await expect(page.getByRole("heading", { name: "Users", level: 1 })).toBeVisible();
  const users = page.getByRole("table", { name: "Users" });
  // The only admin is protected from locking everyone out.
  await expect(users.getByRole("row", { name: /admin you/ })).toContainText("The last active admin");

  const username = unique("dana");
  const form = page.getByRole("form", { name: "Create a local account" });
  await form.getByLabel("Username").fill("has space");
  await form.getByLabel("Password").fill("short");
  await form.getByRole("button", { name: "Create account" }).click();
  await expect(form).toContainText("no spaces");
  await form.getByLabel("Username").fill(username);
  await form.getByRole("button", { name: "Create account" }).click();
  await expect(form).toContainText("at least 8 characters");
  await form.getByLabel("Password").fill("first-password-1");
  await form.getByRole("button", { name: "Create account" }).click();
  await expect(form.getByRole("status")).toHaveText(`Account “${username}” created.`);
  // The same name again: the server's refusal, said as such.
  await form.getByLabel("Username").fill(username);
  await form.getByLabel("Password").fill("first-password-1");
  await form.getByRole("button", { name: "Create account" }).click();
  await expect(form.getByRole("alert")).toContainText("Refused: a local account named");
  const row = users.getByRole("row", { name: new RegExp(username) });
  await expect(row).toContainText("local password");
  await expect(row).toContainText("active");

  const theirs = await signInAs(browser, username, "first-password-1");
  await expect(theirs).toHaveURL(/\/projects$/);
  await expect(theirs.getByRole("link", { name: "Users" })).toHaveCount(0);

  // A new password: the old one stops working, the new one works.
  await row.getByRole("button", { name: `Reset password of ${username}` }).click();
  const reset = page.getByRole("dialog", { name: `New password for ${username}` });
  await reset.getByLabel("New password").fill("second-password-2");
  await reset.getByRole("button", { name: "Set the password" }).click();
  await expect(reset).toBeHidden();
  const again = await signInAs(browser, username, "first-password-1");
  await expect(again.getByRole("alert")).toContainText("Wrong username or password.");
  const fresh = await signInAs(browser, username, "second-password-2");
  await expect(fresh).toHaveURL(/\/projects$/);

  // Make admin and back: the badge follows.
  await row.getByRole("button", { name: `Make ${username} admin` }).click();
  await expect(row).toContainText("admin");
  await expect(row.getByRole("button", { name: `Remove admin from ${username}` })).toBeVisible();
  await expect(users.getByRole("row", { name: /admin you/ })).not.toContainText("The last active admin");
  await row.getByRole("button", { name: `Remove admin from ${username}` }).click();
  await expect(row.getByRole("button", { name: `Make ${username} admin` })).toBeVisible();

  page.once("dialog", (dialog) => void dialog.accept());
  await row.getByRole("button", { name: `Disable ${username}` }).click();
  await expect(row).toContainText("disabled");
  await expect(row.getByRole("button", { name: `Enable ${username}` })).toBeVisible();
  await screenshot(page, "admin-users");

  // Their open session ends, and signing in again is refused with the reason.
  await fresh.reload();
  await expect(fresh).toHaveURL(/\/signin/);
  const refused = await signInAs(browser, username, "second-password-2");
  await expect(refused.getByRole("alert")).toContainText("this account is disabled");
  await screenshot(refused, "admin-users-disabled-sign-in");

  await row.getByRole("button", { name: `Enable ${username}` }).click();
  await expect(row).toContainText("active");

  // The audit log: by action, then by user.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Audit log" }).click();
  await expect(page.getByRole("heading", { name: "Audit log", level: 1 })).toBeVisible();
  const events = page.getByRole("table", { name: "Audit events" });
  await page.getByLabel("Action").selectOption("user.create");
  await expect(events.getByRole("row").filter({ hasText: `username: ${username}` })).toHaveCount(1);
  await expect(events.getByRole("row").filter({ hasNotText: "user.create" })).toHaveCount(1); // the header
  await page.getByLabel("Action").selectOption("user.update");
  await expect(events.getByRole("row").filter({ hasText: "is_active: false" }).first()).toBeVisible();
  await expect(events.getByRole("row").filter({ hasText: "password: changed" }).first()).toBeVisible();

  await page.getByLabel("Action").selectOption("");
  await page.getByLabel("User", { exact: true }).selectOption({ label: username });
  await expect(events.getByRole("row").filter({ hasText: "auth.login" }).first()).toBeVisible();
  // Only their own actions: none of the admin's.
  const body = events.locator("tbody");
  await expect(body.getByRole("row")).not.toHaveCount(0);
  for (const who of await body.locator("td:nth-child(2)").allTextContents()) expect(who).toBe(username);
  await expect(page).toHaveURL(/user=\d+/);

  // A time window in the future holds nothing; an inverted one is refused before asking.
  await page.getByLabel("From").fill("2999-01-01T00:00");
  await expect(page.getByText("No events match these filters.")).toBeVisible();
  await page.getByLabel("Until").fill("2998-01-01T00:00");
  await expect(page.getByRole("alert")).toHaveText("The start must be before the end.");
  await page.getByLabel("Until").fill("");
  await page.getByLabel("From").fill("");
  await expect(events.getByRole("row").filter({ hasText: "auth.login" }).first()).toBeVisible();
  await screenshot(page, "admin-audit");
});
