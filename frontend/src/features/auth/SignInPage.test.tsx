import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { json, mockApi, renderRoutes } from "../../test/render";
import { SignInPage } from "./SignInPage";

const ME = {
  id: 1,
  username: "ada",
  email: null,
  display_name: "Ada",
  is_admin: false,
  is_local: true,
  auth_method: "session",
  csrf_token: "t",
};

function renderSignIn(entry = "/signin") {
  return renderRoutes(
    [
      { path: "/signin", element: <SignInPage /> },
      { path: "/projects/:id", element: <p>project page</p> },
      { path: "/projects", element: <p>projects page</p> },
    ],
    entry,
  );
}

async function submit(password: string) {
  const user = userEvent.setup();
  await user.type(await screen.findByLabelText("Username"), "ada");
  await user.type(screen.getByLabelText("Password"), password);
  await user.click(screen.getByRole("button", { name: "Sign in" }));
}

afterEach(() => vi.unstubAllGlobals());

describe("the sign-in page", () => {
  it("offers single sign-on and the local form as the server allows", async () => {
    mockApi({
      "GET /api/auth/config": () => json({ oidc: true, local: false, oidc_name: "Lab Keycloak" }),
      "GET /api/me": () => json({ detail: "not authenticated" }, 401),
    });
    renderSignIn("/signin?next=%2Fprojects%2F7");
    const sso = await screen.findByRole("link", { name: "Sign in with Lab Keycloak" });
    expect(sso).toHaveAttribute("href", "/auth/login?next=%2Fprojects%2F7");
    expect(screen.queryByLabelText("Password")).not.toBeInTheDocument();
  });

  it("says so on a wrong password and clears it", async () => {
    mockApi({
      "GET /api/auth/config": () => json({ oidc: false, local: true, oidc_name: null }),
      "GET /api/me": () => json({ detail: "not authenticated" }, 401),
      "POST /api/auth/local/login": () => json({ detail: "invalid username or password" }, 401),
    });
    renderSignIn();
    await submit("wrong");
    expect(await screen.findByRole("alert")).toHaveTextContent("Wrong username or password.");
    expect(screen.getByLabelText("Password")).toHaveValue("");
    expect(screen.queryByRole("link", { name: /Sign in with/ })).not.toBeInTheDocument();
  });

  it("says how long to wait when rate limited", async () => {
    mockApi({
      "GET /api/auth/config": () => json({ oidc: false, local: true, oidc_name: null }),
      "GET /api/me": () => json({ detail: "not authenticated" }, 401),
      "POST /api/auth/local/login": () =>
        json({ detail: "too many attempts; try again in 37 s" }, 429, { "Retry-After": "37" }),
    });
    renderSignIn();
    await submit("again");
    expect(await screen.findByRole("alert")).toHaveTextContent(
      "Too many sign-in attempts. Try again in 37 seconds.",
    );
  });

  it("goes back to the page the user was on after signing in", async () => {
    let signedIn = false;
    const requests = mockApi({
      "GET /api/auth/config": () => json({ oidc: false, local: true, oidc_name: null }),
      "GET /api/me": () => (signedIn ? json(ME) : json({ detail: "not authenticated" }, 401)),
      "POST /api/auth/local/login": () => {
        signedIn = true;
        return json(ME);
      },
    });
    const { router } = renderSignIn("/signin?next=%2Fprojects%2F7%3Fstatus%3Dpredicted");
    await submit("right");
    await waitFor(() => expect(router.state.location.pathname).toBe("/projects/7"));
    expect(router.state.location.search).toBe("?status=predicted");
    const login = requests.find((r) => r.url.endsWith("/api/auth/local/login"));
    expect(await login?.json()).toEqual({ username: "ada", password: "right" });
  });
});
