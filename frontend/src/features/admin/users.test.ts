import { describe, expect, it } from "vitest";
import { type AdminUser, isLastActiveAdmin, matchesUser, newUserProblem, signInMethod } from "./users";

function user(id: number, extra: Partial<AdminUser> = {}): AdminUser {
  return {
    id,
    issuer: "local",
    subject: `u${id}`,
    username: `u${id}`,
    email: null,
    display_name: null,
    is_admin: false,
    is_active: true,
    is_local: true,
    groups: [],
    created_at: "2025-01-01T00:00:00Z",
    last_login_at: null,
    ...extra,
  };
}

describe("isLastActiveAdmin", () => {
  it("protects the only active admin, once every account is known", () => {
    const root = user(1, { is_admin: true });
    const disabledAdmin = user(2, { is_admin: true, is_active: false });
    const people = [root, disabledAdmin, user(3)];
    expect(isLastActiveAdmin(root, people, true)).toBe(true);
    expect(isLastActiveAdmin(root, people, false)).toBe(false); // more pages: the server decides
    expect(isLastActiveAdmin(user(3), people, true)).toBe(false);
    expect(isLastActiveAdmin(root, [...people, user(4, { is_admin: true })], true)).toBe(false);
  });
});

describe("newUserProblem", () => {
  it("checks the fields as the server does", () => {
    expect(newUserProblem("dave", "long enough")).toBeNull();
    expect(newUserProblem("dave.o@lab-1", "12345678")).toBeNull();
    expect(newUserProblem("", "long enough")).toMatch(/username/);
    expect(newUserProblem("bad name", "long enough")).toMatch(/no spaces/);
    expect(newUserProblem("x".repeat(65), "long enough")).toMatch(/64/);
    expect(newUserProblem("dave", "short")).toMatch(/at least 8/);
  });
});

describe("matchesUser and signInMethod", () => {
  it("finds by any name, case-insensitively", () => {
    const grace = user(5, { username: "grace", display_name: "Grace Hopper", email: "g@lab.example", groups: ["ml"] });
    expect(matchesUser(grace, "HOPPER")).toBe(true);
    expect(matchesUser(grace, "lab.example")).toBe(true);
    expect(matchesUser(grace, "ml")).toBe(true);
    expect(matchesUser(grace, "  ")).toBe(true);
    expect(matchesUser(grace, "ada")).toBe(false);
  });
  it("names the identity provider of SSO accounts", () => {
    expect(signInMethod({ is_local: true, issuer: "local" })).toBe("local password");
    expect(signInMethod({ is_local: false, issuer: "https://idp.lab.example/realms/x" })).toBe("SSO (idp.lab.example)");
    expect(signInMethod({ is_local: false, issuer: "not a url" })).toBe("SSO");
  });
});
