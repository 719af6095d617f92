// Personal settings: API tokens for scripts and CI (create, shown once, list, revoke).
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useId, useRef, useState } from "react";
import { api } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { Dialog } from "../../components/Dialog";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import {
  copyText,
  type CreatedToken,
  curlExample,
  DEFAULT_EXPIRY_DAYS,
  MAX_ACTIVE_TOKENS,
  MAX_EXPIRY_DAYS,
  parseExpiry,
  type Token,
  tokenStatus,
} from "./tokens";
import "./settings.css";

const TOKENS_KEY = ["tokens"] as const;

function when(value: string | null): string {
  return value ? new Date(value).toLocaleString() : "—";
}

function CopyField({ label, value, multiline = false }: { label: string; value: string; multiline?: boolean }) {
  const field = useRef<HTMLInputElement & HTMLTextAreaElement>(null);
  const [copied, setCopied] = useState<boolean | null>(null);
  const id = useId();
  return (
    <div className="copy-field">
      <label htmlFor={id}>{label}</label>
      <div className="copy-row">
        {multiline ? (
          <textarea id={id} ref={field} readOnly value={value} rows={2} spellCheck={false} onFocus={(e) => e.target.select()} />
        ) : (
          <input id={id} ref={field} readOnly value={value} spellCheck={false} onFocus={(e) => e.target.select()} />
        )}
        <button type="button" onClick={() => void copyText(value, field.current).then(setCopied)}>
          Copy {label.toLowerCase()}
        </button>
      </div>
      <span className="muted small" role="status">
        {copied === true ? "Copied." : copied === false ? "Could not copy: select the text and copy it yourself." : ""}
      </span>
    </div>
  );
}

function NewToken({ token, onDone }: { token: CreatedToken; onDone: () => void }) {
  return (
    <div className="card new-token" role="region" aria-label="New token">
      <h3>Token “{token.name}” created</h3>
      <p>
        <strong>Copy it now: it is shown only this once.</strong> Oculab keeps only a hash of it; if it is lost, revoke
        it and create another.
      </p>
      <CopyField label="Token" value={token.token} />
      <CopyField label="Command" value={curlExample(window.location.origin, token.token)} multiline />
      <p className="muted small">
        The command asks the API who you are; any endpoint takes the same header (see <a href="/docs">the API
        docs</a>).
      </p>
      <div className="actions">
        <button type="button" onClick={onDone}>
          I have copied it
        </button>
      </div>
    </div>
  );
}

function CreateToken({ active, onCreated }: { active: number; onCreated: (token: CreatedToken) => void }) {
  const [name, setName] = useState("");
  const [days, setDays] = useState(String(DEFAULT_EXPIRY_DAYS));
  const [never, setNever] = useState(false);
  const queryClient = useQueryClient();
  const expiry = parseExpiry(days, never);
  const create = useMutation({
    mutationFn: async (expires: number | null) =>
      unwrap(await api.POST("/api/tokens", { body: { name: name.trim(), expires_in_days: expires } })),
    onSuccess: (token) => {
      setName("");
      onCreated(token);
      void queryClient.invalidateQueries({ queryKey: TOKENS_KEY });
    },
  });
  const full = active >= MAX_ACTIVE_TOKENS;
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if ("days" in expiry && name.trim()) create.mutate(expiry.days);
  };
  const hintId = useId();
  return (
    <form onSubmit={submit} className="token-form" aria-label="Create a token">
      <label className="field grow">
        <span>Token name</span>
        <input value={name} onChange={(e) => setName(e.target.value)} maxLength={200} placeholder="e.g. CI pipeline" required />
      </label>
      <label className="field">
        <span>Expires in (days)</span>
        <input
          type="number"
          min={1}
          max={MAX_EXPIRY_DAYS}
          step={1}
          value={days}
          disabled={never}
          onChange={(e) => setDays(e.target.value)}
          aria-describedby={hintId}
          aria-invalid={"error" in expiry}
        />
      </label>
      <label className="check">
        <input type="checkbox" checked={never} onChange={(e) => setNever(e.target.checked)} />
        Never expires
      </label>
      <button type="submit" className="primary" disabled={create.isPending || full || !name.trim() || "error" in expiry}>
        {create.isPending ? "Creating…" : "Create token"}
      </button>
      <p id={hintId} className={`muted small form-hint ${"error" in expiry ? "error" : ""}`}>
        {"error" in expiry
          ? expiry.error
          : full
            ? `You have ${MAX_ACTIVE_TOKENS} active tokens, the most allowed: revoke one first.`
            : never
              ? "A token that never expires works until you revoke it."
              : `Up to ${MAX_EXPIRY_DAYS.toLocaleString()} days.`}
      </p>
      {create.isError && (
        <p role="alert" className="error form-hint">
          Could not create the token: {errorMessage(create.error)}
        </p>
      )}
    </form>
  );
}

function RevokeToken({ token }: { token: Token }) {
  const [open, setOpen] = useState(false);
  const queryClient = useQueryClient();
  const revoke = useMutation({
    mutationFn: async () =>
      unwrap(await api.DELETE("/api/tokens/{token_id}", { params: { path: { token_id: token.id } } })),
    onSuccess: async () => {
      await queryClient.invalidateQueries({ queryKey: TOKENS_KEY });
      setOpen(false);
    },
  });
  return (
    <>
      <button type="button" className="danger" onClick={() => setOpen(true)}>
        Revoke {token.name}
      </button>
      <Dialog
        open={open}
        onClose={() => setOpen(false)}
        title={`Revoke “${token.name}”?`}
        description={<p>Scripts using this token ({token.prefix}…) are refused from now on. This cannot be undone.</p>}
      >
        {revoke.isError && (
          <p role="alert" className="error">
            Could not revoke: {errorMessage(revoke.error)}
          </p>
        )}
        <div className="actions">
          <button type="button" className="danger-solid" onClick={() => revoke.mutate()} disabled={revoke.isPending}>
            {revoke.isPending ? "Revoking…" : "Revoke the token"}
          </button>
          <button type="button" onClick={() => setOpen(false)}>
            Keep it
          </button>
        </div>
      </Dialog>
    </>
  );
}

const STATUS_TEXT = { active: "active", expired: "expired", revoked: "revoked" } as const;

export function SettingsPage() {
  useTitle("Settings");
  const tokens = useQuery({
    queryKey: TOKENS_KEY,
    queryFn: async () => unwrap(await api.GET("/api/tokens")),
  });
  const [created, setCreated] = useState<CreatedToken | null>(null);
  const now = Date.now();
  // Newest first; the live ones before the revoked and expired.
  const list = [...(tokens.data ?? [])].sort((a, b) => {
    const rank = (t: Token) => (tokenStatus(t, now) === "active" ? 0 : 1);
    return rank(a) - rank(b) || b.id - a.id;
  });
  const active = list.filter((t) => tokenStatus(t, now) === "active").length;

  return (
    <section className="page settings-page">
      <div className="page-head">
        <h1>Settings</h1>
      </div>
      <section aria-labelledby="tokens-heading" className="stack">
        <div>
          <h2 id="tokens-heading">API tokens</h2>
          <p className="muted">
            A token lets a script or a CI pipeline use the REST API as you, with your projects and roles. Send it as{" "}
            <code>Authorization: Bearer &lt;token&gt;</code>.
          </p>
        </div>
        {created && <NewToken token={created} onDone={() => setCreated(null)} />}
        <CreateToken active={active} onCreated={setCreated} />
        {tokens.isPending && <p className="muted">Loading tokens…</p>}
        {tokens.isError && <ErrorMessage error={tokens.error} />}
        {tokens.isSuccess && list.length === 0 && <p className="muted">You have no tokens.</p>}
        {list.length > 0 && (
          <div className="table-wrap">
            <table className="tokens" aria-label="Your tokens">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Starts with</th>
                  <th scope="col">Created</th>
                  <th scope="col">Expires</th>
                  <th scope="col">Last used</th>
                  <th scope="col">Status</th>
                  <th scope="col">
                    <span className="visually-hidden">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {list.map((token) => {
                  const status = tokenStatus(token, now);
                  return (
                    <tr key={token.id} className={status === "active" ? undefined : "inactive"}>
                      <th scope="row">{token.name}</th>
                      <td>
                        <code>{token.prefix}…</code>
                      </td>
                      <td>{when(token.created_at)}</td>
                      <td>{token.expires_at ? when(token.expires_at) : "never"}</td>
                      <td>{token.last_used_at ? when(token.last_used_at) : "never used"}</td>
                      <td>
                        <span className={`token-status token-${status}`}>{STATUS_TEXT[status]}</span>
                        {status === "revoked" && <div className="muted small">{when(token.revoked_at)}</div>}
                      </td>
                      <td>{status === "active" && <RevokeToken token={token} />}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        )}
      </section>
    </section>
  );
}
