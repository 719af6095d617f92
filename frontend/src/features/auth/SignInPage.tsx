import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useId, useState } from "react";
import { Navigate, useNavigate, useSearchParams } from "react-router";
import { api } from "../../api/client";
import { ApiError, errorMessage, unwrap } from "../../api/errors";
import { keys } from "../../api/keys";
import { useTitle } from "../../components/useTitle";
import { safeNext } from "./next";
import { authConfigQuery, meQuery } from "./queries";

export function signInErrorMessage(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 401) return "Wrong username or password.";
    if (error.status === 429) {
      const wait = error.retryAfter;
      return wait
        ? `Too many sign-in attempts. Try again in ${wait} second${wait === 1 ? "" : "s"}.`
        : "Too many sign-in attempts. Try again in a minute.";
    }
    if (error.status === 404) return "Local accounts are turned off; use single sign-on.";
  }
  return errorMessage(error);
}

export function SignInPage() {
  useTitle("Sign in");
  const [params] = useSearchParams();
  const next = safeNext(params.get("next"));
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const config = useQuery(authConfigQuery);
  // Already signed in (e.g. the back button): straight on.
  const me = useQuery({ ...meQuery, retry: false });
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const errorId = useId();

  const login = useMutation({
    mutationFn: async () =>
      unwrap(await api.POST("/api/auth/local/login", { body: { username, password } })),
    onSuccess: (user) => {
      queryClient.setQueryData(keys.me, user);
      void navigate(next, { replace: true });
    },
    onError: () => setPassword(""),
  });

  if (me.isSuccess) return <Navigate to={next} replace />;

  const submit = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    login.mutate();
  };

  return (
    <main className="signin">
      <div className="signin-card">
        <h1>
          <span className="brand-mark" aria-hidden="true" />
          Sign in to Oculab
        </h1>
        {params.get("next") && <p className="muted">Sign in to continue.</p>}
        {config.isPending && <p className="page-status">Loading…</p>}
        {config.isError && (
          <p role="alert" className="error">
            {errorMessage(config.error)}
          </p>
        )}
        {config.data?.oidc && (
          <a className="button primary wide" href={`/auth/login?next=${encodeURIComponent(next)}`}>
            Sign in with {config.data.oidc_name || "single sign-on"}
          </a>
        )}
        {config.data?.oidc && config.data.local && (
          <p className="divider">
            <span>or with a local account</span>
          </p>
        )}
        {config.data?.local && (
          <form onSubmit={submit} aria-label="Local account" noValidate={false}>
            <label className="field">
              <span>Username</span>
              <input
                name="username"
                autoComplete="username"
                autoCapitalize="none"
                spellCheck={false}
                required
                value={username}
                onChange={(e) => setUsername(e.target.value)}
                aria-describedby={login.isError ? errorId : undefined}
              />
            </label>
            <label className="field">
              <span>Password</span>
              <input
                name="password"
                type="password"
                autoComplete="current-password"
                required
                value={password}
                onChange={(e) => setPassword(e.target.value)}
                aria-describedby={login.isError ? errorId : undefined}
              />
            </label>
            {login.isError && (
              <p role="alert" id={errorId} className="error">
                {signInErrorMessage(login.error)}
              </p>
            )}
            <button type="submit" className="primary wide" disabled={login.isPending}>
              {login.isPending ? "Signing in…" : "Sign in"}
            </button>
          </form>
        )}
        {config.data && !config.data.oidc && !config.data.local && (
          <p role="alert" className="error">
            No way to sign in is configured on this server; ask its administrator.
          </p>
        )}
      </div>
    </main>
  );
}
