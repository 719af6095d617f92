// The audit log's filters (GET /api/admin/audit): what the page offers and how its
// fields become query parameters.
import { infiniteQueryOptions } from "@tanstack/react-query";
import { api, type Schemas } from "../../api/client";
import { unwrap } from "../../api/errors";

export type AuditEvent = Schemas["AuditRead"];

export const AUDIT_PAGE = 100;

// The actions the server records (grep `audit.record(` in server/), in words.
export const AUDIT_ACTIONS: Array<[string, string]> = [
  ["auth.login", "signed in"],
  ["auth.login_failed", "failed to sign in"],
  ["auth.logout", "signed out"],
  ["user.create", "created an account"],
  ["user.update", "changed an account"],
  ["token.create", "created an API token"],
  ["token.revoke", "revoked an API token"],
  ["project.create", "created a project"],
  ["project.update", "changed a project"],
  ["project.delete", "deleted a project"],
  ["membership.set", "set a member's role"],
  ["membership.grant", "granted a role (IdP group)"],
  ["membership.revoke", "revoked a role (IdP group)"],
  ["membership.remove", "removed a member"],
  ["image.delete", "deleted an image"],
  ["dataset.import", "imported a dataset"],
  ["dataset.export", "exported a dataset"],
  ["model.upload", "uploaded a model"],
  ["model.promote", "promoted a model"],
  ["job.cancel", "canceled a job"],
  ["job.priority", "changed a job's priority"],
  ["worker.drain", "drained a worker"],
  ["worker.undrain", "undrained a worker"],
  ["quota.set", "set a GPU quota"],
];

export interface AuditFilters {
  action: string | null;
  actorId: number | null;
  /** The browser's datetime-local values ("2025-01-31T08:00"), in the viewer's zone. */
  since: string | null;
  until: string | null;
}

/** A datetime-local value as the ISO instant the API takes; null when empty or invalid. */
export function localToIso(value: string | null): string | null {
  if (!value) return null;
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(value);
  if (!match) return null;
  const [, y, mo, d, h, mi, s] = match.map(Number) as [number, number, number, number, number, number, number];
  const date = new Date(y, mo - 1, d, h, mi, Number.isNaN(s) ? 0 : s);
  // new Date rolls 31 February over into March: refuse rather than shift.
  if (date.getFullYear() !== y || date.getMonth() !== mo - 1 || date.getDate() !== d) return null;
  return date.toISOString();
}

/** Why the time range cannot be asked for; null when it can. */
export function rangeProblem(filters: Pick<AuditFilters, "since" | "until">): string | null {
  const since = localToIso(filters.since);
  const until = localToIso(filters.until);
  if (filters.since && !since) return "The start is not a valid time.";
  if (filters.until && !until) return "The end is not a valid time.";
  if (since && until && since >= until) return "The start must be before the end.";
  return null;
}

export function auditQuery(filters: AuditFilters) {
  return infiniteQueryOptions({
    queryKey: ["admin", "audit", filters] as const,
    queryFn: async ({ pageParam }) =>
      unwrap(
        await api.GET("/api/admin/audit", {
          params: {
            query: {
              limit: AUDIT_PAGE,
              cursor: pageParam ?? undefined,
              action: filters.action ?? undefined,
              actor_id: filters.actorId ?? undefined,
              since: localToIso(filters.since) ?? undefined,
              until: localToIso(filters.until) ?? undefined,
            },
          },
        }),
      ),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => last.next_cursor,
  });
}

/** An event's details as one line of text (never HTML). */
export function detailsText(details: Record<string, unknown>): string {
  const entries = Object.entries(details);
  if (entries.length === 0) return "";
  return entries.map(([key, value]) => `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`).join(", ");
}
