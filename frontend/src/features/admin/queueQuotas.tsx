// Per-user caps on concurrent jobs per pool (GET/PUT /api/admin/quotas): find a user,
// pick a pool, set the cap; removing a quota brings back the pool's default limit.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useId, useState } from "react";
import { api, type Schemas } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { keys } from "../../api/keys";
import { useDebounced } from "../../lib/useDebounced";

type UserSummary = Schemas["UserSummary"];
type QuotaPut = Schemas["QuotaPut"];

const quotasKey = ["admin", "quotas"] as const;


export function QuotasPanel({ pools }: { pools: { name: string; per_user_limit: number }[] }) {
  const queryClient = useQueryClient();
  const quotas = useQuery({
    queryKey: quotasKey,
    queryFn: async () => unwrap(await api.GET("/api/admin/quotas")),
  });
  const [q, setQ] = useState("");
  const search = useDebounced(q.trim(), 250);
  const users = useQuery({
    queryKey: keys.users(search),
    queryFn: async () => unwrap(await api.GET("/api/users", { params: { query: { q: search, limit: 10 } } })),
    enabled: search.length > 0,
    staleTime: 30_000,
  });
  const [user, setUser] = useState<UserSummary | null>(null);
  const [pool, setPool] = useState(pools[0]?.name ?? "");
  const [limit, setLimit] = useState("1");
  const resultsId = useId();
  const put = useMutation({
    mutationFn: async (body: QuotaPut) => unwrap(await api.PUT("/api/admin/quotas", { body })),
    onSuccess: (rows) => {
      queryClient.setQueryData(quotasKey, rows);
      setUser(null);
      setQ("");
    },
  });
  const limitNumber = Number(limit);
  const valid = user !== null && pool !== "" && Number.isInteger(limitNumber) && limitNumber >= 0 && limitNumber <= 1000;
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (user && valid) put.mutate({ user_id: user.id, pool, max_running: limitNumber });
  };
  const defaults = pools.map((p) => `${p.name}: ${p.per_user_limit}`).join(" · ");

  return (
    <section aria-labelledby="quotas-title" className="queue-section">
      <h2 id="quotas-title">Per-user quotas</h2>
      <p className="muted small">Default concurrent jobs per user — {defaults}.</p>
      {quotas.isError && <p role="alert" className="error">{errorMessage(quotas.error)}</p>}
      {quotas.data && quotas.data.length > 0 && (
        <table className="members">
          <thead>
            <tr>
              <th scope="col">User</th>
              <th scope="col">Pool</th>
              <th scope="col">Max running</th>
              <th scope="col">
                <span className="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {quotas.data.map((row) => (
              <tr key={`${row.user_id}/${row.pool}`}>
                <td>{row.username ?? `user ${row.user_id}`}</td>
                <td>{row.pool}</td>
                <td>{row.max_running}</td>
                <td>
                  <button
                    type="button"
                    className="small"
                    disabled={put.isPending}
                    onClick={() => put.mutate({ user_id: row.user_id, pool: row.pool, max_running: null })}
                    aria-label={`Remove the ${row.pool} quota of ${row.username ?? row.user_id}`}
                  >
                    Remove
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form className="quota-form" onSubmit={submit} aria-label="Set a quota">
        <label className="field grow">
          <span>User</span>
          <input
            type="search"
            value={user ? user.username : q}
            onChange={(e) => {
              setUser(null);
              setQ(e.target.value);
            }}
            placeholder="find by name"
            aria-controls={resultsId}
            autoComplete="off"
          />
        </label>
        <label className="field">
          <span>Pool</span>
          <select value={pool} onChange={(e) => setPool(e.target.value)}>
            {pools.map((p) => (
              <option key={p.name} value={p.name}>
                {p.name}
              </option>
            ))}
          </select>
        </label>
        <label className="field">
          <span>Max running jobs</span>
          <input type="number" min={0} max={1000} step={1} value={limit} onChange={(e) => setLimit(e.target.value)} />
        </label>
        <button type="submit" className="primary" disabled={!valid || put.isPending}>
          Set quota
        </button>
      </form>
      <div id={resultsId} aria-live="polite">
        {!user && search && users.isSuccess && users.data.length === 0 && <p className="muted">Nobody matches “{search}”.</p>}
        {!user && users.data && users.data.length > 0 && search && (
          <ul className="user-results" aria-label="People found">
            {users.data.map((found) => (
              <li key={found.id}>
                <button type="button" className="small" onClick={() => setUser(found)}>
                  Choose {found.username}
                </button>
              </li>
            ))}
          </ul>
        )}
      </div>
      {put.isError && (
        <p role="alert" className="error">
          Could not save the quota: {errorMessage(put.error)}
        </p>
      )}
    </section>
  );
}
