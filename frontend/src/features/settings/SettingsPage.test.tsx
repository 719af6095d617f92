import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { json, mockApi, renderRoutes } from "../../test/render";
import { SettingsPage } from "./SettingsPage";

const TOKEN = {
  id: 4,
  name: "ci",
  prefix: "ocl_AbCdEf",
  created_at: "2025-01-01T00:00:00Z",
  expires_at: "2099-01-01T00:00:00Z",
  last_used_at: null,
  revoked_at: null,
};

afterEach(() => vi.unstubAllGlobals());

describe("the settings page", () => {
  it("shows a new token once, with a curl command that uses it", async () => {
    const requests = mockApi({
      "GET /api/tokens": () => json([]),
      "POST /api/tokens": () => json({ ...TOKEN, token: "ocl_secret-value" }, 201),
    });
    renderRoutes([{ path: "/settings", element: <SettingsPage /> }], "/settings");
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText("Token name"), "ci");
    await user.clear(screen.getByLabelText("Expires in (days)"));
    await user.type(screen.getByLabelText("Expires in (days)"), "30");
    await user.click(screen.getByRole("button", { name: "Create token" }));
    const shown = await screen.findByRole("region", { name: "New token" });
    expect(within(shown).getByLabelText("Token")).toHaveValue("ocl_secret-value");
    expect(within(shown).getByLabelText("Command")).toHaveValue(
      `curl -H "Authorization: Bearer ocl_secret-value" ${window.location.origin}/api/me`,
    );
    const post = requests.find((r) => r.method === "POST");
    expect(await post?.json()).toEqual({ name: "ci", expires_in_days: 30 });
    await user.click(within(shown).getByRole("button", { name: "I have copied it" }));
    expect(screen.queryByRole("region", { name: "New token" })).not.toBeInTheDocument();
  });

  it("does not send an expiry the server would refuse, and says the server's refusal", async () => {
    mockApi({
      "GET /api/tokens": () => json([TOKEN]),
      "POST /api/tokens": () => json({ detail: "too many requests" }, 429, { "Retry-After": "30" }),
    });
    renderRoutes([{ path: "/settings", element: <SettingsPage /> }], "/settings");
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText("Token name"), "nightly");
    await user.clear(screen.getByLabelText("Expires in (days)"));
    await user.type(screen.getByLabelText("Expires in (days)"), "5000");
    expect(screen.getByRole("button", { name: "Create token" })).toBeDisabled();
    expect(screen.getByText("Between 1 and 3650 days.")).toBeInTheDocument();
    await user.click(screen.getByLabelText("Never expires"));
    await user.click(screen.getByRole("button", { name: "Create token" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Could not create the token: too many requests");
    expect(screen.getByRole("row", { name: /ci/ })).toHaveTextContent("active");
  });
});
