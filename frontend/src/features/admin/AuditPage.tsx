// Admin — audit log: who did what, when, newest first; filters by action, user and
// time (kept in the URL, so a filtered view can be shared), "Load more" pages on.
import { useInfiniteQuery } from "@tanstack/react-query";
import { useId } from "react";
import { Link, useSearchParams } from "react-router";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { AUDIT_ACTIONS, type AuditFilters, auditQuery, detailsText, rangeProblem } from "./audit";
import { adminUsersQuery } from "./users";
import "./users.css";

const ACTION_WORDS = new Map(AUDIT_ACTIONS);

function positiveInt(value: string | null): number | null {
  if (!value || !/^\d+$/.test(value)) return null;
  const n = Number(value);
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

export function AuditPage() {
  useTitle("Audit log");
  const [params, setParams] = useSearchParams();
  const id = useId();
  const filters: AuditFilters = {
    action: params.get("action") || null,
    actorId: positiveInt(params.get("user")),
    since: params.get("since") || null,
    until: params.get("until") || null,
  };
  const problem = rangeProblem(filters);
  const events = useInfiniteQuery({ ...auditQuery(filters), enabled: problem === null });
  const users = useInfiniteQuery(adminUsersQuery);
  const people = users.data?.pages.flatMap((page) => page.items) ?? [];
  const rows = events.data?.pages.flatMap((page) => page.items) ?? [];
  const filtered = Boolean(filters.action || filters.actorId || filters.since || filters.until);

  const set = (key: string, value: string | null) =>
    setParams(
      (prev) => {
        const next = new URLSearchParams(prev);
        if (value) next.set(key, value);
        else next.delete(key);
        return next;
      },
      { replace: true },
    );

  return (
    <section className="page audit-page">
      <div className="page-head">
        <h1>Audit log</h1>
      </div>
      <form className="toolbar audit-filters" aria-label="Filter the audit log" onSubmit={(e) => e.preventDefault()}>
        <div className="field">
          <label htmlFor={`${id}-action`}>Action</label>
          <select id={`${id}-action`} value={filters.action ?? ""} onChange={(e) => set("action", e.target.value || null)}>
            <option value="">Any action</option>
            {AUDIT_ACTIONS.map(([action, words]) => (
              <option key={action} value={action}>
                {action} — {words}
              </option>
            ))}
            {filters.action && !ACTION_WORDS.has(filters.action) && <option value={filters.action}>{filters.action}</option>}
          </select>
        </div>
        <div className="field">
          <label htmlFor={`${id}-user`}>User</label>
          <select id={`${id}-user`} value={filters.actorId ?? ""} onChange={(e) => set("user", e.target.value || null)}>
            <option value="">Anyone</option>
            {people.map((u) => (
              <option key={u.id} value={u.id}>
                {u.username}
                {u.display_name && u.display_name !== u.username ? ` (${u.display_name})` : ""}
              </option>
            ))}
            {filters.actorId !== null && !people.some((u) => u.id === filters.actorId) && (
              <option value={filters.actorId}>user {filters.actorId}</option>
            )}
          </select>
        </div>
        <label className="field">
          <span>From</span>
          <input type="datetime-local" value={filters.since ?? ""} onChange={(e) => set("since", e.target.value || null)} />
        </label>
        <label className="field">
          <span>Until</span>
          <input type="datetime-local" value={filters.until ?? ""} onChange={(e) => set("until", e.target.value || null)} />
        </label>
        {filtered && (
          <button type="button" onClick={() => setParams(new URLSearchParams(), { replace: true })}>
            Clear filters
          </button>
        )}
      </form>
      <p className="muted small">Times are in your browser’s time zone; the start is included, the end is not.</p>
      {problem && (
        <p role="alert" className="error">
          {problem}
        </p>
      )}
      {events.isPending && problem === null && <p className="page-status">Loading the audit log…</p>}
      {events.isError && <ErrorMessage error={events.error} />}
      {events.isSuccess && rows.length === 0 && (
        <p className="empty">{filtered ? "No events match these filters." : "Nothing has been recorded yet."}</p>
      )}
      {rows.length > 0 && (
        <div className="table-wrap">
          <table className="audit" aria-label="Audit events">
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Who</th>
                <th scope="col">Action</th>
                <th scope="col">Object</th>
                <th scope="col">Project</th>
                <th scope="col">Details</th>
                <th scope="col">Address</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((event) => (
                <tr key={event.id}>
                  <td>
                    <time dateTime={event.created_at}>{new Date(event.created_at).toLocaleString()}</time>
                  </td>
                  <td>{event.actor_name ?? <span className="muted">system</span>}</td>
                  <td>
                    <code>{event.action}</code>
                    {ACTION_WORDS.has(event.action) && <div className="muted small">{ACTION_WORDS.get(event.action)}</div>}
                  </td>
                  <td>{event.target_type ? `${event.target_type} ${event.target_id ?? ""}` : "—"}</td>
                  <td>
                    {event.project_id !== null ? (
                      <Link to={`/projects/${event.project_id}`}>project {event.project_id}</Link>
                    ) : (
                      "—"
                    )}
                  </td>
                  <td className="audit-details">{detailsText(event.details)}</td>
                  <td className="muted small">{event.ip ?? ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {events.isSuccess && (
        <p className="muted small" aria-live="polite">
          {rows.length.toLocaleString()} event{rows.length === 1 ? "" : "s"} shown{events.hasNextPage ? "; there are more" : ""}.
        </p>
      )}
      {events.hasNextPage && (
        <button type="button" onClick={() => void events.fetchNextPage()} disabled={events.isFetchingNextPage}>
          {events.isFetchingNextPage ? "Loading…" : "Load more events"}
        </button>
      )}
    </section>
  );
}
