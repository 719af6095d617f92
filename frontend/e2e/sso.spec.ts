import { IDP_NAME, IDP_USER } from "./global-setup";
import { expect, screenshot, test } from "./fixtures";

test("sign in through the real OpenID provider and come back to the page asked for", async ({ browser }) => {
  const context = await browser.newContext();
  // The provider's page links a stylesheet on a CDN; there is no internet here.
  await context.route(/^https:\/\//, (route) => route.abort());
  const page = await context.newPage();
  await page.goto("/projects/new");
  await expect(page).toHaveURL(/\/signin\?next=%2Fprojects%2Fnew$/);
  const sso = page.getByRole("link", { name: `Sign in with ${IDP_NAME}` });
  await expect(sso).toBeVisible();
  await expect(page.getByLabel("Password")).toBeVisible(); // local accounts are on too
  await screenshot(page, "signin-sso-and-local");
  await sso.click();

  // The IdP's own login form.
  await expect(page).toHaveURL(new RegExp(`^${process.env.OCULAB_E2E_IDP_URL}/`));
  await page.getByPlaceholder("sub").fill(IDP_USER.sub);
  await screenshot(page, "signin-sso-idp-form");
  await page.getByRole("button", { name: "Authorize" }).click();

  await expect(page).toHaveURL(/\/projects\/new$/);
  await expect(page.getByRole("heading", { name: "New project" })).toBeVisible();
  await expect(page.getByText(`Signed in as ${IDP_USER.name}`)).toBeVisible();
  const me: unknown = await (await page.request.get("/api/me")).json();
  expect(me).toMatchObject({ username: IDP_USER.preferred_username, is_local: false, email: IDP_USER.email });
  await screenshot(page, "signin-sso-done");
  await context.close();
});
