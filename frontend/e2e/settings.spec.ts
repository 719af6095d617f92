// Personal API tokens: one made in Settings works with the real curl, the way the page
// says to use it, and stops working once revoked.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { expect, screenshot, test } from "./fixtures";
import { signInAsAdmin, unique } from "./support";

const run = promisify(execFile);
const CURL = "/usr/bin/curl";

/** The HTTP status and body of GET {url}/api/me with the token, from curl itself. */
async function whoAmI(baseURL: string, token: string): Promise<{ status: number; body: string }> {
  const { stdout } = await run(CURL, [
    "--silent",
    "--show-error",
    "--max-time",
    "10",
    "--header",
    `Authorization: Bearer ${token}`,
    "--write-out",
    "\n%{http_code}",
    `${baseURL}/api/me`,
  ]);
  const at = stdout.lastIndexOf("\n");
  return { status: Number(stdout.slice(at + 1)), body: stdout.slice(0, at) };
}

test("a token made in Settings works with curl, is shown once, and fails once revoked", async ({
  page,
  context,
  baseURL,
}) => {
  if (!baseURL) throw new Error("no baseURL");
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: baseURL });
  await signInAsAdmin(page);
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Settings" }).click();
  await expect(page.getByRole("heading", { name: "API tokens" })).toBeVisible();

  const name = unique("ci");
  await page.getByLabel("Token name").fill(name);
  await page.getByLabel("Expires in (days)").fill("0");
  await expect(page.getByText("Between 1 and 3650 days.")).toBeVisible();
  await expect(page.getByRole("button", { name: "Create token" })).toBeDisabled();
  await page.getByLabel("Expires in (days)").fill("7");
  await page.getByRole("button", { name: "Create token" }).click();

  const shown = page.getByRole("region", { name: "New token" });
  await expect(shown).toContainText("shown only this once");
  const token = await shown.getByLabel("Token", { exact: true }).inputValue();
  expect(token).toMatch(/^ocl_[A-Za-z0-9_-]{20,}$/);
  // The Copy button puts exactly the token on the clipboard.
  await shown.getByRole("button", { name: "Copy token" }).click();
  await expect(shown.getByRole("status").first()).toHaveText("Copied.");
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(token);
  const command = await shown.getByLabel("Command").inputValue();
  expect(command).toBe(`curl -H "Authorization: Bearer ${token}" ${baseURL}/api/me`);
  await screenshot(page, "settings-token-created");

  // The ready-to-paste command, as a shell runs it, answers with the signed-in user.
  const pasted = await run("/bin/sh", ["-c", command.replace(/^curl /, `${CURL} --silent --max-time 10 `)]);
  expect(JSON.parse(pasted.stdout)).toMatchObject({ username: "admin", auth_method: "token" });
  const ok = await whoAmI(baseURL, token);
  expect(ok.status).toBe(200);

  await shown.getByRole("button", { name: "I have copied it" }).click();
  await expect(shown).toHaveCount(0);
  // Listed by name, never with the secret again.
  const row = page.getByRole("table", { name: "Your tokens" }).getByRole("row", { name: new RegExp(name) });
  await expect(row).toContainText("active");
  await expect(page.locator("body")).not.toContainText(token);
  await page.reload();
  await expect(row).toContainText(token.slice(0, 10));
  await expect(row).not.toContainText("never used"); // the curl calls above used it

  await row.getByRole("button", { name: `Revoke ${name}` }).click();
  const confirm = page.getByRole("dialog", { name: `Revoke “${name}”?` });
  await confirm.getByRole("button", { name: "Revoke the token" }).click();
  await expect(confirm).toBeHidden();
  await expect(row).toContainText("revoked");
  await expect(row.getByRole("button", { name: `Revoke ${name}` })).toHaveCount(0);
  await screenshot(page, "settings-token-revoked");

  const refused = await whoAmI(baseURL, token);
  expect(refused.status).toBe(401);
  expect(JSON.parse(refused.body)).toEqual({ detail: "API token has been revoked" });
});
