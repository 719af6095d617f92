// Accounts for the admin pages (GET/POST/PATCH /api/admin/users): queries and the
// rules the server applies (server/admin/service.py), as pure functions.
import { infiniteQueryOptions } from "@tanstack/react-query";
import { api, type Schemas } from "../../api/client";
import { unwrap } from "../../api/errors";

export type AdminUser = Schemas["UserAdminRead"];

export const USERS_KEY = ["admin", "users"] as const;
export const USERS_PAGE = 200;
export const MIN_PASSWORD = 8;
export const USERNAME_PATTERN = /^[A-Za-z0-9_.@-]{1,64}$/;

export const adminUsersQuery = infiniteQueryOptions({
  queryKey: USERS_KEY,
  queryFn: async ({ pageParam }) =>
    unwrap(await api.GET("/api/admin/users", { params: { query: { limit: USERS_PAGE, cursor: pageParam ?? undefined } } })),
  initialPageParam: null as string | null,
  getNextPageParam: (last) => last.next_cursor,
});

/** Matches a filter against the name, username, e-mail and groups (case-insensitive). */
export function matchesUser(user: AdminUser, filter: string): boolean {
  const q = filter.trim().toLowerCase();
  if (!q) return true;
  return [user.username, user.display_name ?? "", user.email ?? "", ...user.groups].some((v) =>
    v.toLowerCase().includes(q),
  );
}

/** Where the account signs in: "local password" or the identity provider's host. */
export function signInMethod(user: Pick<AdminUser, "is_local" | "issuer">): string {
  if (user.is_local) return "local password";
  try {
    return `SSO (${new URL(user.issuer).host})`;
  } catch {
    return "SSO";
  }
}

/**
 * Whether taking admin rights or the account away from `user` would leave nobody to
 * administer Oculab: the server refuses it (409). Only knowable with every user loaded.
 */
export function isLastActiveAdmin(user: AdminUser, everyone: readonly AdminUser[], complete: boolean): boolean {
  if (!complete || !user.is_admin || !user.is_active) return false;
  return !everyone.some((u) => u.id !== user.id && u.is_admin && u.is_active);
}

/** What is wrong with a new account's fields, before sending them; null when fine. */
export function newUserProblem(username: string, password: string): string | null {
  if (!USERNAME_PATTERN.test(username)) {
    return "A username is 1 to 64 letters, digits or . _ @ - (no spaces).";
  }
  if (password.length < MIN_PASSWORD) return `The password needs at least ${MIN_PASSWORD} characters.`;
  return null;
}
